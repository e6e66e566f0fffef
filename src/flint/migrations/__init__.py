"""Alembic migrations, shipped inside the package so `flint migrate` works anywhere."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from flint.common.db import Database
from flint.common.platform_keys import ensure_platform_keys
from flint.installs.signing import ensure_signing_key

SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["engine"] = db.engine
    return config


def migrate(db: Database) -> None:
    """Brings the schema to the newest revision and creates the platform keys."""
    command.upgrade(alembic_config(db), "head")
    with db.unit_of_work() as uow:
        ensure_platform_keys(uow.session, uow.now)
        ensure_signing_key(uow.session, uow.now)
        uow.commit()
