"""Fixtures for fault tests: a database the test may take away, tenants on it,
and Flint processes (server, worker) that the test stops, kills and restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from flint.accounts import service as accounts
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.common.db import Database
from flint.migrations import migrate
from flint.supervisor import wait_for_grpc
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from tests.conftest import (
    MerchantCreds,
    PartnerCreds,
    Process,
    create_merchant,
    create_partner,
    flint_env,
)
from tests.faults.private_postgres import PrivatePostgres, private_postgres

# A partner's app installed on a merchant, served by a server that accepts
# loopback receivers: the webhook tests' fixtures, shared.
from tests.webhooks.conftest import hooks, hooks_channel, hooks_server  # noqa: F401

START_TIMEOUT_SECONDS = 60


@dataclass
class Outage:
    """The database of a fault test, and how to take it away and back.

    PostgreSQL: a private cluster, restarted for real (the shared server stays
    up for everyone else). SQLite is a file with no server to restart: its
    outage is the loss of the processes that hold it open, which restart."""

    database_url: str
    db: Database
    admin_key: str
    postgres: PrivatePostgres | None


@pytest.fixture(scope="session")
def outage(database_url: str, db: Database, admin_key: str) -> Iterator[Outage]:
    if db.is_sqlite:
        yield Outage(database_url, db, admin_key, None)
        return
    with private_postgres() as postgres:
        url = postgres.create_database("flint")
        private = Database(url)
        migrate(private)
        with private.unit_of_work() as uow:
            private_admin = accounts.rotate_admin_key(uow).secret
            uow.commit()
        yield Outage(url, private, private_admin, postgres)
        private.dispose()


def start_process(database_url: str, log_path: Path, *args: str) -> Process:
    """`flint <args>` with loopback receivers allowed, its output in `log_path`."""
    env = {**flint_env(database_url), ALLOW_LOOPBACK_ENV: "1"}
    with log_path.open("a") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "flint", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return Process(popen, log_path)


def start_server(database_url: str, port: int, log_dir: Path) -> Process:
    server = start_process(database_url, log_dir / f"grpc-{port}.log", "serve", "--port", str(port))
    if not wait_for_grpc(port, START_TIMEOUT_SECONDS):
        server.stop()
        raise RuntimeError(f"gRPC server did not start:\n{server.log()}")
    return server


def start_worker(database_url: str, log_dir: Path) -> Process:
    """A worker that notices a dead colleague's lease quickly."""
    return start_process(
        database_url,
        log_dir / "worker.log",
        "worker",
        "--lease-seconds=1",
        "--connect-timeout=1",
        "--read-timeout=2",
        "--poll-interval=0.05",
    )


def kill(process: Process) -> None:
    os.kill(process.popen.pid, signal.SIGKILL)
    process.popen.wait(10)


def new_tenants(channel: grpc.Channel, admin: str) -> tuple[PartnerCreds, MerchantCreds]:
    """A partner and a merchant, created through the admin RPCs."""
    stub = accounts_grpc.AccountsServiceStub(channel)
    return create_partner(stub, admin, "Fault Apps"), create_merchant(stub, admin, "Fault Shop")
