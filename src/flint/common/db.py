"""The one place that opens database sessions.

Writers go through `Database.unit_of_work()`: one transaction, rolled back unless
the caller commits. On SQLite every writer takes the database lock up front
(`BEGIN IMMEDIATE`), because SQLite has no row locks and silently ignores
`FOR UPDATE`; on PostgreSQL writers take row locks where they read-then-write.

`Database.handing_over()` opens a unit of work early and hands it to the next
`unit_of_work()` in the same context: an idempotency claim written first then
commits with the handler's change, in one transaction.

Readers go through `Database.read()`. On PostgreSQL they run in autocommit: each
statement already sees only committed rows (READ COMMITTED gives a reader no
more than that), and a read then costs one round trip instead of three (BEGIN,
the query, ROLLBACK).
"""

from __future__ import annotations

import contextvars
import functools
import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Dialect,
    Engine,
    Insert,
    Table,
    create_engine,
    event,
    insert,
    inspect,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, make_transient_to_detached
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


def make_reader_engine(url: str) -> Engine:
    """PostgreSQL readers' own pool, whose connections stay in autocommit: one
    pool for both would switch a connection in and out of autocommit at every
    checkout and return, which costs a read more CPU than its query."""
    engine = create_engine(
        normalize_url(url), pool_size=8, max_overflow=8, isolation_level="AUTOCOMMIT"
    )
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


@functools.cache
def _insert_into(table: Table) -> Insert:
    return insert(table)


def insert_now(session: Session, record: Base) -> None:
    """Inserts a new mapped object at once with one Core INSERT and attaches it to
    `session` as a loaded row, as if read back: later changes to it are flushed as
    UPDATEs as usual. For hot write paths, where the ORM's flush bookkeeping for a
    new object costs more CPU than its statement. Columns left unset get their
    defaults and are loaded when first read."""
    state = inspect(record)
    mapper = state.mapper
    row = {
        column.key: state.dict[attribute.key]
        for attribute in mapper.column_attrs
        for column in attribute.columns[:1]
        if attribute.key in state.dict
    }
    session.connection().execute(_insert_into(cast(Table, mapper.local_table)), row)
    make_transient_to_detached(record)
    session.add(record)


class _Handover:
    def __init__(self, database: Database, uow: UnitOfWork) -> None:
        self.database = database
        self.uow: UnitOfWork | None = uow


_handover: contextvars.ContextVar[_Handover | None] = contextvars.ContextVar(
    "flint_unit_of_work_handover", default=None
)


class Database:
    def __init__(self, url: str, clock: Clock = system_clock) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._writer = self.engine.execution_options(flint_writer=True)
        self._reader = self.engine if self.is_sqlite else make_reader_engine(self.url)
        self.clock = clock

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        handed = _handover.get()
        if handed is not None and handed.database is self and handed.uow is not None:
            # The transaction `handing_over` opened (an idempotency claim in it).
            uow, handed.uow = handed.uow, None
        else:
            uow = UnitOfWork(Session(self._writer, expire_on_commit=False), self.clock())
        # Closing the session rolls back whatever was not committed, and keeps
        # loaded objects readable for building the response.
        with uow.session:
            try:
                yield uow
            except FlintError as error:
                if error.commit:
                    uow.commit()
                raise

    @contextmanager
    def handing_over(self) -> Iterator[UnitOfWork]:
        """Opens a unit of work that the next `unit_of_work()` of this database in
        this context takes over: what is written in it now (an idempotency claim)
        commits or rolls back with the caller's first transaction, for one commit
        instead of two. Rolled back on exit if nothing took it over."""
        uow = UnitOfWork(Session(self._writer, expire_on_commit=False), self.clock())
        handed = _Handover(self, uow)
        token = _handover.set(handed)
        try:
            with uow.session:
                yield uow
        finally:
            handed.uow = None
            _handover.reset(token)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for readers, which never write or lock; closed on exit."""
        with Session(self._reader, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        self._reader.dispose()
