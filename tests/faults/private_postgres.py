"""A PostgreSQL cluster of the test's own (initdb into a temporary directory,
pg_ctl on a free port), so a test can restart its database without touching the
machine's shared server, which other test runs use at the same time.

initdb and the server refuse to run as root: when the tests run as root, the
cluster belongs to the `postgres` user (`runuser`)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.conftest import free_port

BIN = Path(os.environ.get("FLINT_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "postgres"
COMMAND_TIMEOUT_SECONDS = 60


def _as_owner(*command: str) -> list[str]:
    return ["runuser", "-u", OWNER, "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class PrivatePostgres:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", *args),
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.directory / "server.log"), "start")

    def stop(self) -> None:
        # Fast: open connections are cut, as in a crash or failover.
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = Path(tempfile.mkdtemp(prefix="flint-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OWNER)
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    cluster = PrivatePostgres(directory, free_port())
    subprocess.run(
        _as_owner(
            str(BIN / "initdb"),
            "-D",
            str(cluster.data),
            "--username=root",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
        ),
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
