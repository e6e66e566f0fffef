"""The plugin's own state, in one SQLite file: each install's tokens and event
cursor, the webhook endpoint's secret, the events already handled, the newest
version seen of each object, and the orders the plugin knows about."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from flint.sdk import Tokens

SCHEMA = """
CREATE TABLE IF NOT EXISTS installs (
    install_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    tokens TEXT NOT NULL,           -- JSON of flint.sdk.Tokens; refresh tokens rotate
    cursor TEXT NOT NULL DEFAULT '', -- events before it are handled (GET /v1/events?after=)
    since TEXT NOT NULL DEFAULT '',  -- with no cursor yet: re-sync events created after this
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS oauth_states (
    state TEXT PRIMARY KEY,
    code_verifier TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_endpoint (
    app_id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    secret TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS handled_events (
    event_id TEXT PRIMARY KEY,      -- the webhook-id
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    source TEXT NOT NULL,           -- webhook or resync
    outcome TEXT NOT NULL,          -- handled or stale
    handled REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS object_versions (
    object_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL,
    currency TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    thanked INTEGER NOT NULL DEFAULT 0
);
"""
STATE_MAX_AGE_SECONDS = 600


@dataclass(frozen=True)
class Install:
    install_id: str
    merchant_id: str
    environment: str
    tokens: Tokens
    cursor: str
    since: str


@dataclass(frozen=True)
class Order:
    order_id: str
    merchant_id: str
    status: str
    total: int
    currency: str
    customer_email: str
    thanked: bool


@dataclass(frozen=True)
class HandledEvent:
    event_id: str
    type: str
    object_id: str
    source: str
    outcome: str


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short transaction (committed on success) on its own connection,
        so the web server's threads never share one."""
        with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            db.row_factory = sqlite3.Row
            yield db

    # --- OAuth state -------------------------------------------------------------

    def save_state(self, state: str, code_verifier: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO oauth_states VALUES (?, ?, ?)", (state, code_verifier, time.time())
            )

    def pop_state(self, state: str) -> str | None:
        """The PKCE verifier kept for `state`, usable once and for ten minutes."""
        with self._connect() as db:
            row = db.execute(
                "DELETE FROM oauth_states WHERE state = ? RETURNING code_verifier, created",
                (state,),
            ).fetchone()
        if row is None or row["created"] < time.time() - STATE_MAX_AGE_SECONDS:
            return None
        return str(row["code_verifier"])

    # --- installs ----------------------------------------------------------------

    def save_install(self, tokens: Tokens) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO installs (install_id, merchant_id, environment, tokens)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (install_id) DO UPDATE SET tokens = excluded.tokens, active = 1""",
                (
                    tokens.install_id,
                    tokens.merchant_id,
                    tokens.environment,
                    json.dumps(tokens.to_dict()),
                ),
            )

    def save_since(self, install_id: str, since: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE installs SET since = ? WHERE install_id = ?", (since, install_id))

    def save_tokens(self, tokens: Tokens) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE installs SET tokens = ? WHERE install_id = ?",
                (json.dumps(tokens.to_dict()), tokens.install_id),
            )

    def save_cursor(self, install_id: str, cursor: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE installs SET cursor = ? WHERE install_id = ?", (cursor, install_id))

    def deactivate_install(self, install_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE installs SET active = 0 WHERE install_id = ?", (install_id,))

    def installs(self) -> list[Install]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM installs WHERE active = 1 ORDER BY rowid").fetchall()
        return [_install(row) for row in rows]

    def install_for(self, merchant_id: str, environment: str) -> Install | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM installs WHERE merchant_id = ? AND environment = ? AND active = 1",
                (merchant_id, environment),
            ).fetchone()
        return None if row is None else _install(row)

    # --- the webhook endpoint ----------------------------------------------------

    def webhook_endpoint(self, app_id: str) -> tuple[str, str] | None:
        """(endpoint id, signing secret), once created."""
        with self._connect() as db:
            row = db.execute(
                "SELECT endpoint_id, secret FROM webhook_endpoint WHERE app_id = ?", (app_id,)
            ).fetchone()
        return None if row is None else (str(row["endpoint_id"]), str(row["secret"]))

    def save_webhook_endpoint(self, app_id: str, endpoint_id: str, secret: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO webhook_endpoint VALUES (?, ?, ?)",
                (app_id, endpoint_id, secret),
            )

    # --- events ------------------------------------------------------------------

    def was_handled(self, event_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT 1 FROM handled_events WHERE event_id = ?", (event_id,))
            return row.fetchone() is not None

    def newest_version(self, object_id: str) -> int:
        with self._connect() as db:
            row = db.execute(
                "SELECT version FROM object_versions WHERE object_id = ?", (object_id,)
            ).fetchone()
        return 0 if row is None else int(row["version"])

    def record_event(
        self,
        *,
        event_id: str,
        type: str,
        object_id: str,
        version: int,
        source: str,
        outcome: str,
        order: Order | None = None,
    ) -> None:
        """Marks an event handled and, in the same transaction, keeps the newest
        version of its object and the order's latest state."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO handled_events VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, type, object_id, source, outcome, time.time()),
            )
            if outcome != "handled":
                return
            db.execute(
                """INSERT INTO object_versions VALUES (?, ?) ON CONFLICT (object_id)
                   DO UPDATE SET version = max(version, excluded.version)""",
                (object_id, version),
            )
            if order is not None:
                db.execute(
                    """INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id)
                       DO UPDATE SET status = excluded.status, total = excluded.total,
                                     customer_email = excluded.customer_email,
                                     thanked = max(thanked, excluded.thanked)""",
                    (
                        order.order_id,
                        order.merchant_id,
                        order.status,
                        order.total,
                        order.currency,
                        order.customer_email,
                        int(order.thanked),
                    ),
                )

    def handled_events(self) -> list[HandledEvent]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT event_id, type, object_id, source, outcome FROM handled_events "
                "ORDER BY handled"
            ).fetchall()
        return [HandledEvent(*row) for row in rows]

    def orders(self) -> list[Order]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM orders ORDER BY order_id DESC").fetchall()
        return [_order(row) for row in rows]

    def order(self, order_id: str) -> Order | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else _order(row)


def _install(row: sqlite3.Row) -> Install:
    return Install(
        install_id=row["install_id"],
        merchant_id=row["merchant_id"],
        environment=row["environment"],
        tokens=Tokens.from_dict(json.loads(row["tokens"])),
        cursor=row["cursor"],
        since=row["since"],
    )


def _order(row: sqlite3.Row) -> Order:
    return Order(
        order_id=row["order_id"],
        merchant_id=row["merchant_id"],
        status=row["status"],
        total=int(row["total"]),
        currency=row["currency"],
        customer_email=row["customer_email"],
        thanked=bool(row["thanked"]),
    )
