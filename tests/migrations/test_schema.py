"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select

from flint.accounts.models import MerchantRecord, PartnerRecord
from flint.apps.models import AppRecord
from flint.commerce.models import TimelineRecord
from flint.common.db import Database
from flint.installs.models import InstallRecord, TokenFamilyRecord
from flint.migrations import alembic_config, migrate
from flint.migrations.metadata import metadata
from tests.conftest import fresh_database_url


@contextmanager
def database_at(directory: Path, revision: str) -> Iterator[tuple[Database, Config]]:
    """A fresh database of this run's kind, migrated up to `revision` only."""
    with fresh_database_url(directory) as url:
        db = Database(url)
        try:
            config = alembic_config(db)
            command.upgrade(config, revision)
            yield db, config
        finally:
            db.dispose()


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

    with database_at(tmp_path, "0007") as (db, config):
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


def test_existing_token_families_stay_refreshable_without_the_secret(tmp_path):
    now = datetime.now(UTC)
    rows = [
        (
            MerchantRecord,
            {"id": "mer_1", "name": "Shop", "email": "shop@example.com", "password_hash": "x"},
        ),
        (PartnerRecord, {"id": "par_1", "name": "Acme Apps"}),
        (
            AppRecord,
            {
                "id": "app_1",
                "partner_id": "par_1",
                "name": "Loyalty",
                "description": "",
                "icon_url": "",
                "support_url": "",
                "privacy_url": "",
                "redirect_uris": [],
                "requested_scopes": [],
                "status": "active",
                "client_id": "ca_1",
                "client_secret_hash": "x",
                "updated_at": now,
            },
        ),
        (
            InstallRecord,
            {
                "id": "ins_1",
                "merchant_id": "mer_1",
                "app_id": "app_1",
                "status": "active",
                "version": 1,
                "updated_at": now,
            },
        ),
        (
            TokenFamilyRecord,
            {
                "id": "key_1",
                "client_id": "ca_1",
                "install_id": "ins_1",
                "merchant_id": "mer_1",
                "environment": "test",
                "scopes": ["orders:read"],
                "revoke_reason": "",
            },
        ),
    ]

    def columns(db: Database) -> set[str]:
        return {c["name"] for c in inspect(db.engine).get_columns("oauth_token_families")}

    with database_at(tmp_path, "0008") as (db, config):
        with db.engine.begin() as connection:
            for model, values in rows:
                row = {"created_at": now, **values}
                connection.execute(insert(model.__table__).values(row))
        command.upgrade(config, "0009")
        with db.engine.connect() as connection:
            flags = connection.execute(
                select(TokenFamilyRecord.id, TokenFamilyRecord.client_authenticated)
            ).all()
        assert [tuple(flag) for flag in flags] == [("key_1", False)]
        command.downgrade(config, "0008")
        assert "client_authenticated" not in columns(db)
        with db.engine.connect() as connection:
            assert connection.execute(select(TokenFamilyRecord.id)).scalars().all() == ["key_1"]
