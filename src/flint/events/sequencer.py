"""Stamps committed events with their global cursor, in one serialised step.

A sequence value taken at insert is not in commit order: a slow transaction can
commit a smaller number after a reader has passed it. So events are written
with no cursor, and the sequencer — which only ever sees committed rows, and
runs one at a time (an advisory lock on PostgreSQL; SQLite writers are
serialised) — numbers them contiguously after the current maximum. A reader
following `cursor > X` therefore never skips one. Consumers (the webhook
fan-out) run in the same transaction, so each event reaches them exactly once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from flint.common.db import Database, UnitOfWork
from flint.common.events import EventRecord
from flint.common.logs import log_event

logger = logging.getLogger("flint.events")

BATCH = 1000
# After a run that numbered events, how long to let more commits gather.
LINGER = 0.01

# Work that must happen exactly once per event, in the transaction that numbers
# it (the webhook fan-out): given to the sequencer by whoever wires the process.
Consumer = Callable[[UnitOfWork, Sequence[EventRecord]], None]
# Any constant: the key of the transaction-level advisory lock on PostgreSQL.
ADVISORY_LOCK_KEY = 0x0F17_E7E7


# Built once (statement construction and its cache key cost more CPU than the
# round trip). The current head comes with the pending rows, in one statement.
_PENDING = (
    select(EventRecord, select(func.coalesce(func.max(EventRecord.cursor), 0)).scalar_subquery())
    .where(EventRecord.cursor.is_(None))
    .order_by(EventRecord.created_at, EventRecord.id)
    .limit(BATCH)
)
_EVENTS = cast(Table, EventRecord.__table__)
_STAMP = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(cursor=bindparam("event_cursor"))
)


def sequence_pending(db: Database, consumers: Sequence[Consumer] = ()) -> int:
    """Numbers the committed, unnumbered events (oldest first); returns how many."""
    with db.unit_of_work() as uow:
        session = uow.session
        connection = session.connection()
        if not db.is_sqlite:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        rows = session.execute(_PENDING).all()
        if not rows:
            return 0
        pending = [event for event, _ in rows]
        head = rows[0][1]
        stamps = []
        for offset, event in enumerate(pending, start=1):
            # Known to the loaded object without marking it changed (no second UPDATE).
            set_committed_value(event, "cursor", head + offset)
            stamps.append({"event_id": event.id, "event_cursor": head + offset})
        connection.execute(_STAMP, stamps)
        for consume in consumers:
            consume(uow, pending)
        if not db.is_sqlite:
            connection.exec_driver_sql("NOTIFY flint_events")
        uow.commit()
    return len(pending)


class Sequencer:
    """Runs `sequence_pending` on a thread: at once when this process committed
    an event (`kick`), and every `interval` seconds for other processes' events.
    When busy it runs at most once per `LINGER`, so commits batch up."""

    def __init__(
        self,
        db: Database,
        *,
        consumers: Sequence[Consumer] = (),
        interval: float = 0.1,
        on_sequenced: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._consumers = tuple(consumers)
        self._interval = interval
        self._on_sequenced = on_sequenced
        self._kicked = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flint-sequencer", daemon=True)

    def start(self) -> None:
        _kickers.append(self._kicked.set)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._kicked.set()
        self._thread.join(5)
        if self._kicked.set in _kickers:
            _kickers.remove(self._kicked.set)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._kicked.wait(self._interval)
            self._kicked.clear()
            try:
                while (numbered := sequence_pending(self._db, self._consumers)) == BATCH:
                    pass
            except Exception as error:
                log_event(logger, "sequencer_failed", level=logging.WARNING, error=str(error))
                continue
            if self._on_sequenced is not None:
                self._on_sequenced()
            if numbered:
                # Busy: let the next commits gather into one batch rather than
                # run once per commit (a run costs about the same for 1 or 100).
                self._stopping.wait(LINGER)


_kickers: list[Callable[[], None]] = []


def kick() -> None:
    """Wakes this process's sequencer (called after a commit that wrote events)."""
    for wake in list(_kickers):
        wake()
