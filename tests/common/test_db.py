"""Database sessions against PostgreSQL (always: the pool behaviour below exists
only there, and PostgreSQL is required by the suite on either setting)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from flint.common.db import Database
from tests.conftest import POSTGRES_ADMIN_URL, wait_until


@pytest.fixture
def postgres() -> Iterator[Database]:
    database = Database(POSTGRES_ADMIN_URL)
    yield database
    database.dispose()


def backend_pid(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(text("select pg_backend_pid()")).scalar_one())


def test_a_pooled_connection_the_server_ended_is_replaced_at_checkout(postgres: Database) -> None:
    pid = backend_pid(postgres)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (pid,))
        wait_until(
            lambda: (
                admin.execute(
                    "select count(*) from pg_stat_activity where pid = %s", (pid,)
                ).fetchone()
                == (0,)
            )
        )

    # The pooled connection is dead; the next read gets a new one, without an error.
    assert backend_pid(postgres) != pid


def test_readers_leave_no_transaction_open(postgres: Database) -> None:
    with postgres.read() as session:
        session.execute(text("select 1"))
        # In a transaction begun by the statement before, now() (the transaction's
        # start) would be earlier than this statement's start.
        own_transaction = session.execute(text("select now() = statement_timestamp()")).scalar()
    assert own_transaction is True
