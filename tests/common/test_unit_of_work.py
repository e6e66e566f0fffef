"""Units of work on both databases: the hand-over of an open transaction to the
next `unit_of_work()` (how an idempotency claim commits with the handler's
change), and `insert_now` (a new row written at once, then kept as loaded)."""

from __future__ import annotations

import secrets
from datetime import datetime

import pytest
from sqlalchemy import select

from flint.common.db import Database, UnitOfWork, insert_now
from flint.common.errors import Code, FlintError
from flint.common.idempotency import IdempotencyKeyRecord


def new_row(now: datetime, method: str = "m") -> IdempotencyKeyRecord:
    """Any small table will do: this one is at hand in every database."""
    return IdempotencyKeyRecord(
        scope="test:unit-of-work",
        environment="",
        key=secrets.token_hex(8),
        method=method,
        request_hash="h",
        status="done",
        claim_id="c",
        locked_until=now,
        response=None,
        created_at=now,
        expires_at=now,
    )


def write(uow: UnitOfWork) -> str:
    row = new_row(uow.now)
    uow.session.add(row)
    uow.session.flush()
    return row.key


def stored(db: Database, key: str) -> list[str]:
    with db.read() as session:
        return list(
            session.scalars(
                select(IdempotencyKeyRecord.method).where(IdempotencyKeyRecord.key == key)
            )
        )


def test_the_first_unit_of_work_takes_over_the_handed_over_transaction(db: Database) -> None:
    with db.handing_over() as handed:
        early = write(handed)
        with db.unit_of_work() as first:
            assert first is handed
            late = write(first)
            first.commit()
        with db.unit_of_work() as second:
            assert second is not handed
    assert stored(db, early) == ["m"]
    assert stored(db, late) == ["m"]


def test_a_handed_over_transaction_nobody_took_rolls_back(db: Database) -> None:
    with db.handing_over() as handed:
        key = write(handed)
    assert stored(db, key) == []


def test_a_failing_first_unit_of_work_rolls_back_what_was_handed_over(db: Database) -> None:
    keys: list[str] = []

    def handler() -> None:
        with db.handing_over() as handed:
            keys.append(write(handed))
            with db.unit_of_work():
                raise FlintError(Code.FAILED_PRECONDITION, "NOPE", "refused")

    with pytest.raises(FlintError):
        handler()
    assert stored(db, keys[0]) == []


def test_another_database_does_not_take_the_handed_over_transaction(
    db: Database, database_url: str
) -> None:
    other = Database(database_url)
    try:
        with db.handing_over() as handed:
            with other.unit_of_work() as uow:
                assert uow is not handed
            with db.unit_of_work() as uow:
                assert uow is handed
    finally:
        other.dispose()


def test_a_row_inserted_now_is_visible_at_once_and_later_changes_are_updates(
    db: Database,
) -> None:
    with db.unit_of_work() as uow:
        row = new_row(uow.now, method="first")
        insert_now(uow.session, row)
        assert row in uow.session
        assert not uow.session.new
        assert (
            uow.session.scalar(
                select(IdempotencyKeyRecord.method).where(IdempotencyKeyRecord.key == row.key)
            )
            == "first"
        )
        row.method = "changed"
        uow.commit()
    assert stored(db, row.key) == ["changed"]
