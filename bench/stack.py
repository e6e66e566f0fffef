"""Flint, started for real for one benchmark: a fresh database, `flint serve`
(and optionally Envoy and a webhook worker) as child processes on free ports,
and a seeded merchant, partner, app and install to call it with.

    with FlintStack(database="postgresql", envoy=True) as stack:
        stack.grpc_target, stack.app_token, stack.rest_url, stack.pids
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Literal

import psycopg

from flint.accounts import service as accounts
from flint.common import envelope
from flint.common.db import Database
from flint.devseed import EXAMPLE_SCOPES, SeedResult, dev_install, seed
from flint.installs.oauth import Tokens
from flint.migrations import migrate
from flint.supervisor import stop_process, wait_for_envoy, wait_for_grpc
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV

DatabaseKind = Literal["postgresql", "sqlite"]
POSTGRES_ADMIN_URL = os.environ.get(
    "FLINT_BENCH_POSTGRES_ADMIN_URL",
    os.environ.get("FLINT_TEST_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test"),
)
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flint_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flint", *args]


class FlintStack:
    """A context manager; everything it starts it stops, and it drops its database."""

    def __init__(
        self,
        database: DatabaseKind = "postgresql",
        *,
        envoy: bool = False,
        worker: bool = False,
        worker_args: tuple[str, ...] = (),
        serve_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if database not in ("postgresql", "sqlite"):
            raise ValueError(f"database must be postgresql or sqlite, not {database!r}")
        self.database = database
        self._want_envoy = envoy
        self._want_worker = worker
        self._worker_args = worker_args
        self._serve_args = serve_args
        self._extra_env = extra_env or {}
        self._workdir = Path(tempfile.mkdtemp(prefix=f"flint-bench-{database}-"))
        self._pg_name = ""
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.database_url = ""
        # Direct access to the stack's database (to preload or count rows).
        self.db: Database | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.admin_port = 0
        self.admin_key = ""
        self._seeded: SeedResult | None = None
        self._tokens: Tokens | None = None

    # --- what a scenario uses ---------------------------------------------------

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        if not self.http_port:
            raise RuntimeError("this stack runs without Envoy (FlintStack(envoy=True))")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def public_url(self) -> str:
        # The OAuth issuer: the server checks app tokens against it.
        return f"http://127.0.0.1:{self.http_port or 8080}"

    @property
    def seeded(self) -> SeedResult:
        if self._seeded is None:
            raise RuntimeError("the stack is not running")
        return self._seeded

    @property
    def tokens(self) -> Tokens:
        if self._tokens is None:
            raise RuntimeError("the stack is not running")
        return self._tokens

    @property
    def app_token(self) -> str:
        """An access token of the example app installed on the merchant (test)."""
        return self.tokens.access_token

    @property
    def merchant_id(self) -> str:
        return self.seeded.merchant.merchant.id

    @property
    def merchant_key(self) -> str:
        """The merchant's test secret key (`sk_test_…`)."""
        return next(k.secret for k in self.seeded.merchant.keys if k.record.environment == "test")

    @property
    def partner_key(self) -> str:
        return self.seeded.partner.key.secret

    @property
    def pids(self) -> dict[str, int]:
        """Child process ids by role ("grpc", "envoy", "worker"), e.g. for memory."""
        return {name: child.pid for name, child in self._children.items()}

    @property
    def env(self) -> dict[str, str]:
        """The environment Flint's children run with (for more of them)."""
        return {
            **os.environ,
            "FLINT_DATABASE_URL": self.database_url,
            "FLINT_PUBLIC_URL": self.public_url,
            ALLOW_LOOPBACK_ENV: "1",
            **self._extra_env,
        }

    def log(self, name: str) -> str:
        path = self._workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_process(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts a child with the stack's environment (and `env` over it) and log
        directory; it is stopped with the stack."""
        with (self._workdir / f"{name}.log").open("wb") as log:
            child = subprocess.Popen(  # noqa: S603 - our own command line
                args, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
            )
        self._children[name] = child
        return child

    # --- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> FlintStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        self.database_url = self._create_database()
        if self._want_envoy:
            self.http_port, self.admin_port = free_port(), free_port()
        self._migrate_and_seed()
        self.grpc_port = free_port()
        self.start_process(
            "grpc", flint_command("serve", "--port", str(self.grpc_port), *self._serve_args)
        )
        if not wait_for_grpc(self.grpc_port, STARTUP_TIMEOUT_SECONDS, self._children_alive):
            raise RuntimeError(f"flint serve did not start:\n{self.log('grpc')}")
        if self._want_envoy:
            self.start_process(
                "envoy",
                flint_command(
                    "envoy",
                    "--http-port",
                    str(self.http_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--hosted-port",
                    str(free_port()),
                    "--admin-port",
                    str(self.admin_port),
                ),
            )
            if not wait_for_envoy(self.admin_port, STARTUP_TIMEOUT_SECONDS, self._children_alive):
                raise RuntimeError(f"Envoy did not start:\n{self.log('envoy')}")
        if self._want_worker:
            self.start_process("worker", flint_command("worker", *self._worker_args))

    def _children_alive(self) -> bool:
        return all(child.poll() is None for child in self._children.values())

    def _create_database(self) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self._workdir / 'flint.db'}"
        self._pg_name = f"flint_bench_{secrets.token_hex(6)}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self._pg_name}"')
        return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{self._pg_name}"

    def _migrate_and_seed(self) -> None:
        if not os.environ.get(envelope.KEK_ENV) and not os.environ.get(envelope.KEK_FILE_ENV):
            # A throwaway key-encryption key for this run's throwaway database; the
            # children inherit it through `env`.
            os.environ[envelope.KEK_ENV] = envelope.new_kek_line()
        db = Database(self.database_url)
        self.db = db
        migrate(db)
        with db.unit_of_work() as uow:
            self.admin_key = accounts.rotate_admin_key(uow).secret
            seeded = self._seeded = seed(uow, password=secrets.token_urlsafe(12))
            uow.commit()
        self._tokens = dev_install(
            db,
            client_id=seeded.app.client_id,
            client_secret=seeded.client_secret,
            merchant_id=self.merchant_id,
            scope=" ".join(EXAMPLE_SCOPES),
            environment="test",
            issuer=self.public_url,
        )

    def close(self) -> None:
        # Envoy first, so nothing new reaches a server that is draining.
        for name in ("envoy", "worker", *self._children):
            child = self._children.pop(name, None)
            if child is not None:
                stop_process(child, STOP_TIMEOUT_SECONDS)
        if self.db is not None:
            self.db.dispose()
            self.db = None
        if self._pg_name:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
            self._pg_name = ""
        shutil.rmtree(self._workdir, ignore_errors=True)
