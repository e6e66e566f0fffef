"""The one place that opens database sessions.

Writers go through `Database.unit_of_work()`: one transaction, rolled back unless
the caller commits. On SQLite every writer takes the database lock up front
(`BEGIN IMMEDIATE`), because SQLite has no row locks and silently ignores
`FOR UPDATE`; on PostgreSQL writers take row locks where they read-then-write.

Readers go through `Database.read()`. On PostgreSQL they run in autocommit: each
statement already sees only committed rows (READ COMMITTED gives a reader no
more than that), and a read then costs one round trip instead of three (BEGIN,
the query, ROLLBACK).
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from flint.common.clock import Clock, system_clock
from flint.common.errors import FlintError

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive ones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012


def normalize_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    # Enough pooled connections for the server's worker threads plus its
    # background jobs, so busy moments do not open and close overflow
    # connections; the ceiling (30 a process) is unchanged.
    engine = create_engine(url, pool_size=20, max_overflow=10)
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # Instead of a round trip per checkout (pool_pre_ping), look at the idle
        # socket: a connection the server ended (a restart, an idle timeout, a
        # terminated backend) has the server's goodbye or EOF waiting on it. The
        # pool drops such a connection and hands out a new one.
        if dbapi_connection.closed or _has_unread_input(dbapi_connection.fileno()):
            raise DisconnectionError("the server closed this pooled connection")


def _has_unread_input(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writer = connection.get_execution_options().get("flint_writer", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


class UnitOfWork:
    """One transaction. Nothing is kept unless `commit()` is called."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        # One timestamp for everything the transaction writes.
        self.now = now
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Runs `callback` once the transaction has committed (never if it rolls back)."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()


class Database:
    def __init__(self, url: str, clock: Clock = system_clock) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._writer = self.engine.execution_options(flint_writer=True)
        self._reader = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self.clock = clock

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        # Closing the session rolls back whatever was not committed, and keeps
        # loaded objects readable for building the response.
        with Session(self._writer, expire_on_commit=False) as session:
            uow = UnitOfWork(session, self.clock())
            try:
                yield uow
            except FlintError as error:
                if error.commit:
                    uow.commit()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for readers, which never write or lock; closed on exit."""
        with Session(self._reader, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
