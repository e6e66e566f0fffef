"""Reading the event log: list and get, limited to what the reader may see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from flint.common.errors import Code, FlintError, invalid_argument, not_found
from flint.common.events import EventRecord
from flint.common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from flint.events.presenter import Reader, cursor_key, cursor_token, parse_cursor
from flint.events.visibility import visible_object_types

RETENTION = timedelta(days=30)


DEFAULT_HEARTBEAT_SECONDS = 15
MAX_HEARTBEAT_SECONDS = 60


def heartbeat_seconds(requested: int) -> int:
    """Seconds between heartbeats on an idle stream: 0 means the default, more
    than the maximum is the maximum, a negative number is refused."""
    if requested < 0:
        raise invalid_argument(
            "heartbeat_seconds",
            "OUT_OF_RANGE",
            f"must be 1 to {MAX_HEARTBEAT_SECONDS}, or 0 for {DEFAULT_HEARTBEAT_SECONDS}",
        )
    return min(requested or DEFAULT_HEARTBEAT_SECONDS, MAX_HEARTBEAT_SECONDS)


def visible(reader: Reader) -> Select[EventRecord]:
    """Sequenced events of the reader's merchant and environment that it may see."""
    query = select(EventRecord).where(
        EventRecord.merchant_id == reader.merchant_id,
        EventRecord.environment == reader.environment,
        EventRecord.cursor.is_not(None),
    )
    if reader.install_id:
        query = query.where(
            EventRecord.app_id.in_(("", reader.app_id)),
            or_(
                EventRecord.object_type.in_(visible_object_types(reader.scopes)),
                and_(
                    EventRecord.object_type == "install",
                    EventRecord.object_id == reader.install_id,
                ),
            ),
        )
    return query


def accepts(reader: Reader, event: EventRecord, types: Sequence[str]) -> bool:
    """The in-memory twin of `visible`, for events the stream hub broadcasts."""
    if event.merchant_id != reader.merchant_id or event.environment != reader.environment:
        return False
    if types and event.type not in types:
        return False
    if not reader.install_id:
        return True
    if event.app_id not in ("", reader.app_id):
        return False
    if event.object_type == "install":
        return event.object_id == reader.install_id
    return event.object_type in visible_object_types(reader.scopes)


def start_position(session: Session, reader: Reader, after: str, now: datetime) -> int:
    """The position a list or stream resumes after. An empty cursor means the
    start of retention; a cursor older than retention is CURSOR_EXPIRED."""
    if not after:
        return 0
    position = parse_cursor(cursor_key(session), reader, after, "after")
    created = session.scalar(select(EventRecord.created_at).where(EventRecord.cursor == position))
    if position > 0 and (created is None or created < now - RETENTION):
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "CURSOR_EXPIRED",
            "The cursor is older than the 30 days of retained events; list from the start",
            metadata={"field": "after"},
        )
    return position


@dataclass(frozen=True)
class EventFilter:
    types: Sequence[str] = ()
    object_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_events(
    session: Session,
    reader: Reader,
    *,
    page_size: int,
    after: str,
    where: EventFilter,
    now: datetime,
) -> tuple[list[EventRecord], str, bool]:
    if page_size < 0:
        raise invalid_argument("page_size", "INVALID_PAGE_SIZE", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    position = start_position(session, reader, after, now)
    query = visible(reader).where(
        EventRecord.cursor > position, EventRecord.created_at >= now - RETENTION
    )
    if where.types:
        query = query.where(EventRecord.type.in_(list(where.types)))
    if where.object_id:
        query = query.where(EventRecord.object_id == where.object_id)
    if where.created_after:
        query = query.where(EventRecord.created_at >= where.created_after)
    if where.created_before:
        query = query.where(EventRecord.created_at < where.created_before)
    rows = list(session.scalars(query.order_by(EventRecord.cursor).limit(size + 1)))
    has_more = len(rows) > size
    rows = rows[:size]
    last = rows[-1].cursor if rows else position
    return rows, cursor_token(cursor_key(session), reader, last or 0), has_more


def get_event(session: Session, reader: Reader, event_id: str) -> EventRecord:
    event = session.scalar(visible(reader).where(EventRecord.id == event_id))
    if event is None:
        raise not_found("event", event_id)
    return event


def events_after(
    session: Session, reader: Reader, position: int, types: Sequence[str], limit: int
) -> list[EventRecord]:
    query = visible(reader).where(EventRecord.cursor > position)
    if types:
        query = query.where(EventRecord.type.in_(list(types)))
    return list(session.scalars(query.order_by(EventRecord.cursor).limit(limit)))


def own_position(session: Session, reader: Reader, newest: int) -> int:
    """Where a stream that starts "from now" stands for `reader`: the cursor of
    the last event at or before the platform's `newest` that the reader may
    see (0 if none). Not `newest` itself: a heartbeat carries this position,
    and the platform-wide cursor would show how many events other tenants
    make. Resuming from it misses nothing, as the reader may see no event
    between it and `newest`."""
    query = visible(reader).where(EventRecord.cursor <= newest)
    position = session.scalar(query.with_only_columns(func.max(EventRecord.cursor)))
    return int(position or 0)
