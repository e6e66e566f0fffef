"""The transactional outbox. Every state change records its event with
`record_event` inside the same unit of work, so an event exists exactly when
its change committed."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Table, insert
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base, UnitOfWork
from flint.common.ids import new_id


class EventRecord(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(40))
    # Per-object sequence number: consumers drop an event older than one seen.
    object_version: Mapped[int] = mapped_column(Integer)
    # The object as the API shows it, at the time of the change.
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    # Set for events only one app may see (its own app charges): "" means any
    # app whose grant allows the object.
    app_id: Mapped[str] = mapped_column(String(40), default="")
    # Global position in commit order, stamped after commit by the sequencer
    # (a sequence value taken at insert would not be in commit order).
    cursor: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    __table_args__ = (
        Index("ix_events_tenant", "merchant_id", "environment", "id"),
        # Reads in cursor order per tenant (lists, streams, a stream's own position).
        Index("ix_events_tenant_cursor", "merchant_id", "environment", "cursor"),
        Index("ix_events_unsequenced", "cursor", "id"),
    )


_INSERT = insert(cast(Table, EventRecord.__table__))


def record_event(
    uow: UnitOfWork,
    *,
    merchant_id: str,
    environment: str,
    type: str,
    object_type: str,
    object_id: str,
    object_version: int,
    data: dict[str, Any],
    app_id: str = "",
) -> str:
    """Writes the event in `uow`'s transaction; returns its id."""
    from flint.events.catalog import BY_NAME  # noqa: PLC0415 - events builds on common

    if type not in BY_NAME or BY_NAME[type].object_type != object_type:
        raise ValueError(f"{type!r} on {object_type!r} is not in the event catalog")
    event_id = new_id("evt")
    # A Core insert, at once: an event is written once and never changed in its
    # transaction, so the ORM's unit-of-work bookkeeping would be pure cost.
    uow.session.connection().execute(
        _INSERT,
        {
            "id": event_id,
            "merchant_id": merchant_id,
            "environment": environment,
            "type": type,
            "object_type": object_type,
            "object_id": object_id,
            "object_version": object_version,
            "data": data,
            "app_id": app_id,
            "created_at": uow.now,
            "cursor": None,
        },
    )
    # Number it (and fan it out) as soon as it is committed.
    uow.after_commit(_kick_sequencer)
    return event_id


def _kick_sequencer() -> None:
    from flint.events.sequencer import kick  # noqa: PLC0415 - events builds on common

    kick()
