"""`flint up --replicas N --workers M` for tests: the real supervisor and its
children (found from /proc), and what Envoy counted per replica."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from tests.cli.test_flint_up import ProcessInfo, Up, descendants, flint_up
from tests.conftest import free_port


@dataclass
class Stack:
    up: Up
    grpc_ports: tuple[int, ...]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.up.http_port}"

    def log(self) -> str:
        """What every child wrote (each line tagged process="grpc-1", …)."""
        return self.up.stderr_path.read_text(errors="replace")

    def replica(self, port: int) -> ProcessInfo:
        return next(
            child
            for child in descendants(self.up.popen.pid)
            if " serve " in child.cmdline and child.cmdline.endswith(f"--port {port}")
        )

    def requests_per_replica(self) -> dict[int, int]:
        """Requests Envoy sent to each replica, from its admin /clusters page."""
        page = httpx.get(f"http://127.0.0.1:{self.up.admin_port}/clusters", timeout=10).text
        counts = re.findall(r"^grpc::127\.0\.0\.1:(\d+)::rq_total::(\d+)$", page, re.M)
        return {int(port): int(total) for port, total in counts}


# Seven processes start at once: on a busy 2-core machine that takes a while.
STARTUP_DEADLINE_SECONDS = 180.0


def _wait_until_up(up: Up) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while "Flint is up" not in up.stdout():
        if up.popen.poll() is not None:
            raise AssertionError(f"flint up exited {up.popen.returncode}:\n{up.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"flint up did not start in time:\n{up.output()}")
        time.sleep(0.1)


@contextmanager
def running_stack(
    database_url: str, tmp_path: Path, *, replicas: int, workers: int
) -> Iterator[Stack]:
    ports = [free_port() for _ in range(replicas)]
    more_ports = [f"--grpc-port={port}" for port in ports[1:]]
    # The tests' webhook receivers are test-only endpoints on loopback: the
    # development switch, which still refuses the stack's own ports.
    with flint_up(
        database_url,
        tmp_path,
        ports[0],
        *more_ports,
        "--workers",
        str(workers),
        env={ALLOW_LOOPBACK_ENV: "1"},
    ) as up:
        _wait_until_up(up)
        up.children = descendants(up.popen.pid)  # cleanup kills any that outlive flint up
        yield Stack(up, tuple(ports))
