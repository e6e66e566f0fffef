"""Live event streams of one server process. One poller reads newly sequenced
events and hands them to every subscriber in memory, so a thousand open streams
cost one query per tick, not a thousand. A subscriber's queue is bounded: one
that falls behind is marked lagging, drops its queue and catches up from the
database instead, so a slow consumer never grows memory without bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from flint.common.db import Database
from flint.common.events import EventRecord
from flint.common.logs import log_event
from flint.events import service
from flint.events.presenter import Reader

logger = logging.getLogger("flint.events")

POLL_SECONDS = 0.25
QUEUE_LIMIT = 1000
BACKFILL_BATCH = 200


@dataclass(eq=False)
class Subscription:
    reader: Reader
    types: Sequence[str]
    # None wakes a subscriber that became lagging while it waited.
    queue: asyncio.Queue[EventRecord | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_LIMIT)
    )
    lagging: bool = False
    # For operators and tests: how often it fell behind, and the most it queued.
    times_lagged: int = 0
    peak: int = 0


class Hub:
    def __init__(self, db: Database, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._db = db
        self._poll = poll_seconds
        self._subscribers: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.head = 0

    def _max_cursor(self) -> int:
        with self._db.read() as session:
            return int(session.scalar(select(func.max(EventRecord.cursor))) or 0)

    def _after(self, position: int) -> list[EventRecord]:
        with self._db.read() as session:
            return list(
                session.scalars(
                    select(EventRecord)
                    .where(EventRecord.cursor > position)
                    .order_by(EventRecord.cursor)
                    .limit(1000)
                )
            )

    async def _listen(self) -> None:
        """PostgreSQL: the sequencer's NOTIFY wakes every process's poller at once.
        Only a wake-up — the poll reads what is there, so a missed one costs at
        most one poll interval."""
        url = self._db.engine.url.set(drivername="postgresql")
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url.render_as_string(hide_password=False), autocommit=True
                ) as connection:
                    await connection.execute("LISTEN flint_events")
                    async for _notice in connection.notifies():
                        self._wake.set()
            except psycopg.Error as error:
                log_event(logger, "hub_listen_failed", level=logging.WARNING, error=str(error))
                await asyncio.sleep(1)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._db.is_sqlite:
            listener = asyncio.create_task(self._listen())
        try:
            await self._poll_forever()
        finally:
            if not self._db.is_sqlite:
                # Waited for, so its connection closes while the loop still runs.
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _poll_forever(self) -> None:
        self.head = await asyncio.to_thread(self._max_cursor)
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancel that lands as the wait ends, and the hub would outlive `stop`.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            self._wake.clear()
            if not self._subscribers:
                continue
            try:
                events = await asyncio.to_thread(self._after, self.head)
            except OperationalError as error:
                log_event(logger, "hub_poll_failed", level=logging.WARNING, error=str(error.orig))
                continue
            for event in events:
                self._broadcast(event)
                self.head = event.cursor or self.head

    def _broadcast(self, event: EventRecord) -> None:
        for sub in self._subscribers:
            if sub.lagging or not service.accepts(sub.reader, event, sub.types):
                continue
            try:
                sub.queue.put_nowait(event)
                sub.peak = max(sub.peak, sub.queue.qsize())
            except asyncio.QueueFull:
                sub.lagging = True
                sub.times_lagged += 1
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.queue.put_nowait(None)

    def notify_threadsafe(self) -> None:
        """A new event was sequenced in this process: poll now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def follow(
        self,
        reader: Reader,
        types: Sequence[str],
        position: int | None,
        heartbeat_seconds: float,
        still_allowed: Callable[[], bool],
        *,
        announce: bool = False,
    ) -> AsyncIterator[EventRecord | int]:
        """Events after `position` (None: from now) in cursor order; an int is a
        heartbeat carrying the position reached in the reader's own events.
        With `announce`, the first item is such a heartbeat, sent as soon as
        the stream is subscribed (so a client knows that events from then on
        will reach it). Ends when `still_allowed` says the reader lost access
        (asked at least once per heartbeat interval)."""
        sub = Subscription(reader, types)
        self._subscribers.add(sub)
        newest = await asyncio.to_thread(self._max_cursor)
        if self._subscribers == {sub}:
            # The poller idled without subscribers: skip the backlog nobody waits
            # for. (With others listening, moving the head could skip theirs.)
            self.head = max(self.head, newest)
        # A heartbeat carries `last`: it only ever moves with this reader's own
        # events, never with other tenants'.
        if position is None:
            last = await asyncio.to_thread(self._own_position, reader, newest)
        else:
            last = position
        # Access is checked at least once per heartbeat interval, events flowing
        # or not: a busy stream never goes idle, and must still end on revocation.
        checked = time.monotonic()
        try:
            if announce:
                yield last
            backfill = True
            while True:
                if time.monotonic() - checked >= heartbeat_seconds:
                    if not await asyncio.to_thread(still_allowed):
                        return
                    checked = time.monotonic()
                if backfill or sub.lagging:
                    sub.lagging = False
                    batch = await asyncio.to_thread(self._backfill, reader, last, types)
                    for event in batch:
                        yield event
                        last = event.cursor or last
                    backfill = len(batch) == BACKFILL_BATCH
                    continue
                try:
                    async with asyncio.timeout(heartbeat_seconds):
                        queued = await sub.queue.get()
                except TimeoutError:
                    if not await asyncio.to_thread(still_allowed):
                        return
                    checked = time.monotonic()
                    yield last
                    continue
                if queued is None:
                    continue  # lagging: catch up from the database
                if (queued.cursor or 0) > last:
                    yield queued
                    last = queued.cursor or last
        finally:
            self._subscribers.discard(sub)

    def _own_position(self, reader: Reader, newest: int) -> int:
        with self._db.read() as session:
            return service.own_position(session, reader, newest)

    def _backfill(self, reader: Reader, position: int, types: Sequence[str]) -> list[EventRecord]:
        with self._db.read() as session:
            return service.events_after(session, reader, position, types, BACKFILL_BATCH)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
