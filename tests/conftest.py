"""Shared fixtures. Every run gets its own fresh database (SQLite file or a new
PostgreSQL database, chosen by FLINT_TEST_DATABASE) and real processes: the
gRPC server (`flint serve`) and Envoy (`flint envoy`), on free loopback ports."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest

from flint.accounts import service as accounts
from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common import envelope
from flint.common.db import Database
from flint.migrations import migrate
from flint.supervisor import wait_for_envoy, wait_for_grpc

# The suite's merchants make far more calls a second than real callers; the
# limiter stays on (tests/server/test_rate_limits.py sets tight limits per caller).
os.environ.setdefault("FLINT_RATE_LIMIT_TEST_PER_SECOND", "100000")
os.environ.setdefault("FLINT_RATE_LIMIT_LIVE_PER_SECOND", "100000")
os.environ.setdefault("FLINT_HOSTED_RATE_LIMIT_PER_SECOND", "100000")
# The key-encryption key of this test run, inherited by every process it starts
# (`flint_env` copies os.environ); one run, one throwaway key.
if not os.environ.get(envelope.KEK_ENV) and not os.environ.get(envelope.KEK_FILE_ENV):
    os.environ[envelope.KEK_ENV] = envelope.new_kek_line()

POSTGRES_ADMIN_URL = os.environ.get(
    "FLINT_TEST_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fresh_database_url(directory: Path) -> Iterator[str]:
    """A new, empty database of the kind FLINT_TEST_DATABASE names, dropped after."""
    kind = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'flint.db'}"
        return
    if kind != "postgresql":
        raise pytest.UsageError(f"FLINT_TEST_DATABASE must be sqlite or postgresql, not {kind}")
    name = f"flint_test_{secrets.token_hex(6)}"
    # A missing PostgreSQL is a failure, never a skip.
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database_url(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def admin_key(db: Database) -> str:
    with db.unit_of_work() as uow:
        key = accounts.rotate_admin_key(uow)
        uow.commit()
    return key.secret


def flint_env(database_url: str) -> dict[str, str]:
    # Servers started for tests run no upkeep sweep: a test that drives a job
    # owns its timing, and a server's sweep racing it would make it pass only
    # most of the time.
    return {**os.environ, "FLINT_DATABASE_URL": database_url, "FLINT_SWEEP": "off"}


@dataclass
class Process:
    popen: subprocess.Popen[str]
    log_path: Path

    def stop(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text()


def start_grpc_server(
    database_url: str, log_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[Process, int]:
    """`flint serve` on a free port (with `env` added to its environment);
    returns the process and its port."""
    port = free_port()
    log_path = log_dir / f"grpc-{port}.log"
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "flint", "serve", "--port", str(port), *extra],
            env={**flint_env(database_url), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    process = Process(popen, log_path)
    if not wait_for_grpc(port, 30):
        process.stop()
        raise RuntimeError(f"gRPC server did not start:\n{process.log()}")
    return process, port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis (Debian's redis-server) on a free port, for shared rate limits."""
    from flint.supervisor import wait_for_redis

    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    with (directory / "redis.log").open("w") as log:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        popen = subprocess.Popen(
            [*command, "--appendonly", "no", "--dir", str(directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        if not wait_for_redis(url, 30):
            raise RuntimeError(
                f"redis-server did not start:\n{(directory / 'redis.log').read_text()}"
            )
        yield url
    finally:
        popen.terminate()
        popen.wait(15)


@dataclass
class Edge:
    process: Process
    http_port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_envoy(grpc_port: int, log_dir: Path, hosted_port: int | None = None) -> Edge:
    http_port, admin_port = free_port(), free_port()
    log_path = log_dir / f"envoy-{http_port}.log"
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flint",
                "envoy",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                "--hosted-port",
                str(hosted_port or free_port()),
                "--admin-port",
                str(admin_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    process = Process(popen, log_path)
    if not wait_for_envoy(admin_port, 30):
        process.stop()
        raise RuntimeError(f"Envoy did not start:\n{process.log()}")
    return Edge(process, http_port, admin_port)


@pytest.fixture(scope="session")
def grpc_server(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    process, port = start_grpc_server(database_url, tmp_path_factory.mktemp("logs"))
    yield port
    process.stop()


@pytest.fixture(scope="session")
def channel(grpc_server: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server}") as chan:
        yield chan


@pytest.fixture(scope="session")
def live_grpc_server(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """A second server on the session database with a live-capable acquirer
    double (tests/live_acquirer.py), for tests that pay in live mode."""
    process, port = start_grpc_server(
        database_url,
        tmp_path_factory.mktemp("live-logs"),
        env={"FLINT_ACQUIRER": "tests.live_acquirer:live_test_acquirer"},
    )
    yield port
    process.stop()


@pytest.fixture(scope="session")
def live_channel(live_grpc_server: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{live_grpc_server}") as chan:
        yield chan


@pytest.fixture(scope="session")
def edge(grpc_server: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    running = start_envoy(grpc_server, tmp_path_factory.mktemp("envoy"))
    yield running
    running.process.stop()


@pytest.fixture
def rest(edge: Edge) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def accounts_stub(channel: grpc.Channel) -> accounts_grpc.AccountsServiceStub:
    return accounts_grpc.AccountsServiceStub(channel)


@pytest.fixture(scope="session")
def apps_stub(channel: grpc.Channel) -> apps_grpc.AppsServiceStub:
    return apps_grpc.AppsServiceStub(channel)


def bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


@dataclass(frozen=True)
class PartnerCreds:
    id: str
    key: str


@dataclass(frozen=True)
class MerchantCreds:
    id: str
    test_key: str
    live_key: str
    email: str


def create_partner(
    accounts_stub: accounts_grpc.AccountsServiceStub, admin_key: str, name: str = "Acme Apps"
) -> PartnerCreds:
    """A fresh partner, created through the admin RPC."""
    partner = accounts_stub.CreatePartner(
        accounts_pb.CreatePartnerRequest(partner=accounts_pb.Partner(name=name)),
        metadata=bearer(admin_key),
    )
    return PartnerCreds(partner.id, partner.partner_key.secret)


def create_merchant(
    accounts_stub: accounts_grpc.AccountsServiceStub, admin_key: str, name: str = "Corner Shop"
) -> MerchantCreds:
    """A fresh merchant with its test and live keys, created through the admin RPC."""
    email = f"shop-{secrets.token_hex(4)}@example.com"
    merchant = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            merchant=accounts_pb.Merchant(name=name, email=email),
            password="correct horse battery",
        ),
        metadata=bearer(admin_key),
    )
    keys = {key.environment: key.secret for key in merchant.secret_keys}
    return MerchantCreds(
        merchant.id, keys[accounts_pb.ENVIRONMENT_TEST], keys[accounts_pb.ENVIRONMENT_LIVE], email
    )


@pytest.fixture
def new_partner(accounts_stub: accounts_grpc.AccountsServiceStub, admin_key: str) -> PartnerCreds:
    return create_partner(accounts_stub, admin_key)


@pytest.fixture
def other_partner(accounts_stub: accounts_grpc.AccountsServiceStub, admin_key: str) -> PartnerCreds:
    return create_partner(accounts_stub, admin_key, "Rival Apps")


@pytest.fixture
def new_merchant(accounts_stub: accounts_grpc.AccountsServiceStub, admin_key: str) -> MerchantCreds:
    return create_merchant(accounts_stub, admin_key)


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
