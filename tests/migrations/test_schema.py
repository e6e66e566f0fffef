"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select

from flint.commerce.models import TimelineRecord
from flint.common.db import Database
from flint.migrations import alembic_config, migrate
from flint.migrations.metadata import metadata
from tests.conftest import fresh_database_url


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


def test_uncollectible_entries_recorded_as_voided_get_their_own_kind(tmp_path):
    def entry(id: int, kind: str, summary: str) -> dict[str, object]:
        return {
            "id": id,
            "merchant_id": "mer_1",
            "environment": "test",
            "order_id": "ord_1",
            "kind": kind,
            "actor_kind": "app",
            "actor_id": "app_1",
            "actor_name": "Invoicer",
            "object_id": f"in_{id}",
            "summary": summary,
            "details": {},
            "created_at": datetime.now(UTC),
        }

    def kinds(db: Database) -> list[str]:
        with db.engine.connect() as connection:
            return list(
                connection.execute(
                    select(TimelineRecord.kind).order_by(TimelineRecord.id)
                ).scalars()
            )

    with fresh_database_url(tmp_path) as url:
        db = Database(url)
        try:
            config = alembic_config(db)
            command.upgrade(config, "0007")
            with db.engine.begin() as connection:
                connection.execute(
                    insert(TimelineRecord.__table__),
                    [
                        entry(1, "invoice_voided", "Invoice INV-0001 voided"),
                        entry(2, "invoice_voided", "Invoice INV-0002 marked uncollectible"),
                    ],
                )
            command.upgrade(config, "0008")
            assert kinds(db) == ["invoice_voided", "invoice_marked_uncollectible"]
            command.downgrade(config, "0007")
            assert kinds(db) == ["invoice_voided", "invoice_voided"]
        finally:
            db.dispose()
