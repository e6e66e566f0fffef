"""Event retention: each tenant's events past KEEP are forgotten, tenant by
tenant, except events not yet sequenced and the platform's newest event (the
sequencer numbers on from it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from flint.common.db import Database
from flint.common.events import EventRecord
from flint.common.ids import new_id
from flint.events.retention import KEEP, purge_expired_events
from flint.migrations import migrate
from tests.conftest import fresh_database_url

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OLD = NOW - KEEP - timedelta(hours=1)
RECENT = NOW - timedelta(days=1)


@pytest.fixture
def own_db(tmp_path: Path) -> Iterator[Database]:
    # A database of its own: the test numbers cursors itself, with no sequencer.
    with fresh_database_url(tmp_path) as url:
        database = Database(url)
        migrate(database)
        yield database
        database.dispose()


def add_event(db: Database, merchant: str, created_at: datetime, cursor: int | None) -> str:
    event_id = new_id("evt")
    with db.unit_of_work() as uow:
        uow.session.add(
            EventRecord(
                id=event_id,
                merchant_id=merchant,
                environment="test",
                type="order.created",
                object_type="order",
                object_id=new_id("ord"),
                object_version=1,
                data={},
                created_at=created_at,
                cursor=cursor,
            )
        )
        uow.commit()
    return event_id


def remaining(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(select(EventRecord.id)))


def test_events_past_retention_are_forgotten_tenant_by_tenant(own_db: Database) -> None:
    a_old = [add_event(own_db, "mer_a", OLD, cursor) for cursor in (1, 2)]
    b_old = add_event(own_db, "mer_b", OLD, 3)
    a_recent = add_event(own_db, "mer_a", RECENT, 4)
    a_unsequenced = add_event(own_db, "mer_a", OLD, None)
    # The platform's newest event is old too: it stays, so cursors go on from 5.
    c_head = add_event(own_db, "mer_c", OLD, 5)

    result = purge_expired_events(own_db, NOW)

    assert result.done == 3
    assert result.failed == 0
    assert remaining(own_db) == {a_recent, a_unsequenced, c_head}
    assert not {*a_old, b_old} & remaining(own_db)
    # Nothing left to do: a second pass deletes nothing.
    assert purge_expired_events(own_db, NOW).done == 0


def test_events_inside_retention_are_kept(own_db: Database) -> None:
    kept = {add_event(own_db, "mer_a", NOW - KEEP + timedelta(minutes=1), c) for c in (1, 2)}
    add_event(own_db, "mer_b", RECENT, 3)
    assert purge_expired_events(own_db, NOW).done == 0
    assert kept <= remaining(own_db)
