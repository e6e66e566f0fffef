"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from flint.common.db import Database
from flint.migrations import migrate
from flint.migrations.metadata import metadata


def test_migrations_match_the_models(db: Database):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, metadata) == []


def test_migrate_is_idempotent(db: Database):
    migrate(db)
    tables = set(inspect(db.engine).get_table_names())
    assert {"merchants", "partners", "api_keys", "apps", "platform_keys"} <= tables


def test_sqlite_runs_in_wal_mode(db: Database):
    if not db.is_sqlite:
        assert db.engine.dialect.name == "postgresql"
        return
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
