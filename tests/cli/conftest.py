"""Helpers for running the real `flint` command as a subprocess."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import MetaData, create_engine, func, select

from flint.common.db import normalize_url
from tests.conftest import POSTGRES_ADMIN_URL, flint_env

# The console script installed next to the interpreter running the tests.
FLINT = Path(sys.executable).parent / "flint"
COMMAND_TIMEOUT_SECONDS = 60


def run_flint(
    database_url: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    assert FLINT.is_file(), f"no flint console script at {FLINT}"
    return subprocess.run(
        [str(FLINT), *args],
        env=flint_env(database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def run_json(database_url: str, *args: str) -> dict[str, Any]:
    """Runs a command that must succeed with `--json` and returns what it printed."""
    result = run_flint(database_url, *args, "--json")
    assert result.returncode == 0, f"flint {' '.join(args)} failed:\n{result.stderr}"
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def all_rows(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through SQLAlchemy reflection."""
    engine = create_engine(normalize_url(database_url))
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {
                name: [tuple(row) for row in conn.execute(select(table))]
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()


def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(normalize_url(database_url))
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {
                name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()


def database_text(database_url: str) -> str:
    """All stored values as one searchable string."""
    parts: list[str] = []
    for rows in all_rows(database_url).values():
        for row in rows:
            for value in row:
                if isinstance(value, bytes | bytearray | memoryview):
                    parts.append(bytes(value).decode("utf-8", "replace"))
                else:
                    parts.append(str(value))
    return "\n".join(parts)


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of the kind under test that no other test touches."""
    kind = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    assert kind == "postgresql", kind
    name = f"flint_cli_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
