"""`flint up`: migrate, then run every Flint process as a child — N gRPC server
replicas, M webhook workers, the hosted web app and Envoy in front — and stop
them all together. A replica or worker that dies is started again (with
backoff); the hosted app and Envoy are single, so losing one stops the stack.
With several replicas, a private Redis (also restarted when it dies) holds the
rate-limit buckets they share (see common/ratelimit.py)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flint.accounts import service as accounts
from flint.common import credentials
from flint.common.config import Settings
from flint.common.db import Database
from flint.common.logs import log_event
from flint.common.ratelimit import STORE_URL_ENV
from flint.migrations import migrate
from flint.webhooks.addresses import REFUSED_PORTS_ENV, format_ports, parse_ports

logger = logging.getLogger("flint.up")
# Generous: several Python processes starting at once on a busy machine are slow.
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
# A dead replica or worker is started again after a delay that doubles while it
# keeps dying young, and starts over once a run lasted STABLE_SECONDS.
RESTART_FIRST_DELAY_SECONDS = 1.0
RESTART_MAX_DELAY_SECONDS = 30.0
STABLE_SECONDS = 60.0
# Every child tags its log lines with its name (see flint.common.logs).
PROCESS_NAME_ENV = "FLINT_PROCESS"


def stop_process(child: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM (a graceful drain), then SIGKILL if it takes longer than `timeout`."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _flint(*args: str) -> list[str]:
    return [sys.executable, "-m", "flint", *args]


def _always() -> bool:
    return True


def wait_for_grpc(port: int, timeout: float, keep_waiting: Callable[[], bool] = _always) -> bool:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and keep_waiting():
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                time.sleep(0.1)
    return False


def wait_for_http(url: str, timeout: float, keep_waiting: Callable[[], bool] = _always) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and keep_waiting():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def wait_for_envoy(
    admin_port: int, timeout: float, keep_waiting: Callable[[], bool] = _always
) -> bool:
    return wait_for_http(f"http://127.0.0.1:{admin_port}/ready", timeout, keep_waiting)


class LayoutError(ValueError):
    """`flint up` flags that do not make a stack."""


REDIS_SERVER = "redis-server"


def wait_for_redis(url: str, timeout: float, keep_waiting: Callable[[], bool] = _always) -> bool:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        while time.monotonic() < deadline and keep_waiting():
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.1)
        return False
    finally:
        client.close()


def rate_limit_store(directory: str) -> tuple[list[str], str]:
    """The command of a private Redis for the replicas' shared rate limits, and
    its URL: a Unix socket only this user can open, nothing saved to disk (the
    buckets are worth a second or two)."""
    binary = shutil.which(REDIS_SERVER)
    if binary is None:
        raise LayoutError(
            f"several replicas share their rate limits through Redis: install {REDIS_SERVER} "
            f"(apt-get install redis-server) or set {STORE_URL_ENV}=redis://…"
        )
    socket_path = os.path.join(directory, "ratelimit.sock")
    command = [
        binary,
        "--port", "0",
        "--unixsocket", socket_path,
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--dir", directory,
        "--loglevel", "warning",
    ]  # fmt: skip
    return command, f"unix://{socket_path}"


def replica_ports(ports: Sequence[int], replicas: int | None) -> tuple[int, ...]:
    """The gRPC port of each replica: the ports given, or `replicas` consecutive
    ports from the one given."""
    if replicas is not None and replicas < 1:
        raise LayoutError("--replicas must be at least 1")
    if len(ports) > 1:
        if replicas is not None and replicas != len(ports):
            raise LayoutError(
                f"--replicas {replicas} does not match the {len(ports)} --grpc-port values given"
            )
        return tuple(ports)
    return tuple(ports[0] + i for i in range(replicas or 1))


@dataclass
class Child:
    """One process of the stack, and when it may be started again."""

    name: str
    command: list[str]
    env: dict[str, str]
    restartable: bool
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_delay: float = RESTART_FIRST_DELAY_SECONDS
    restart_at: float | None = None
    restarts: int = 0

    def start(self) -> None:
        self.popen = subprocess.Popen(  # noqa: S603 - our own command
            self.command, env={**self.env, PROCESS_NAME_ENV: self.name}
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check(self, now: float) -> bool:
        """Restarts this child when due; False once it died and may not restart."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
                log_event(logger, "process_restarted", process=self.name, restarts=self.restarts)
            return True
        code = None if self.popen is None else self.popen.poll()
        if code is None:
            return True
        if not self.restartable:
            log_event(logger, "process_exited", level=logging.ERROR, process=self.name, code=code)
            return False
        if now - self.started_at >= STABLE_SECONDS:
            self.restart_delay = RESTART_FIRST_DELAY_SECONDS
        self.restart_at = now + self.restart_delay
        log_event(
            logger,
            "process_exited",
            level=logging.WARNING,
            process=self.name,
            code=code,
            restart_in_seconds=self.restart_delay,
        )
        self.restart_delay = min(self.restart_delay * 2, RESTART_MAX_DELAY_SECONDS)
        return True


def run_stack(
    *,
    http_port: int,
    grpc_ports: Sequence[int],
    workers: int,
    hosted_port: int,
    admin_port: int,
    http_host: str,
) -> int:
    if workers < 0:
        raise LayoutError("--workers must be 0 or more")
    settings = Settings.from_env()
    db = Database(settings.database_url)
    if db.is_sqlite and (len(grpc_ports) > 1 or workers > 1):
        # It works (WAL, writers serialised), but every process shares one file
        # on one disk: PostgreSQL is the scale-out path.
        log_event(
            logger,
            "sqlite_scale_out",
            level=logging.WARNING,
            note="several processes on one SQLite file; use PostgreSQL to scale out",
        )
    store_dir: tempfile.TemporaryDirectory[str] | None = None
    store: Child | None = None
    store_url = os.environ.get(STORE_URL_ENV, "")
    if len(grpc_ports) > 1 and not store_url:
        # One bucket per caller across replicas, not one per replica.
        store_dir = tempfile.TemporaryDirectory(prefix="flint-ratelimit-")
        command, store_url = rate_limit_store(store_dir.name)
        store = Child("ratelimit", command, dict(os.environ), restartable=True)
    migrate(db)
    # The hosted app's key lives as long as this stack: it is expired on the way out.
    with db.unit_of_work() as uow:
        internal = accounts.create_internal_key(uow)
        uow.commit()
    public_url = os.environ.get("FLINT_PUBLIC_URL") or f"http://{http_host}:{http_port}"
    child_env = {
        **os.environ,
        # One issuer for the core (which signs tokens) and the hosted app.
        "FLINT_PUBLIC_URL": public_url,
        "FLINT_INTERNAL_KEY": internal.secret,
        "FLINT_HOSTED_SECRET": os.environ.get("FLINT_HOSTED_SECRET") or secrets.token_urlsafe(32),
        # Webhook endpoints never reach this stack's own ports, even with the
        # development switch (FLINT_WEBHOOKS_ALLOW_LOOPBACK, off unless set) on.
        REFUSED_PORTS_ENV: format_ports(
            parse_ports(os.environ.get(REFUSED_PORTS_ENV, ""))
            | {http_port, admin_port, hosted_port, *grpc_ports}
        ),
    }
    if store_url:
        child_env[STORE_URL_ENV] = store_url
    single = len(grpc_ports) == 1
    replicas = [
        Child(
            "grpc" if single else f"grpc-{i}",
            _flint("serve", "--port", str(port)),
            child_env,
            restartable=True,
        )
        for i, port in enumerate(grpc_ports, 1)
    ]
    worker_children = [
        Child("worker" if workers == 1 else f"worker-{i}", _flint("worker"), child_env, True)
        for i in range(1, workers + 1)
    ]
    # The hosted app fails over between replicas (gRPC pick_first over the list).
    grpc_target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in grpc_ports)
    hosted = Child(
        "hosted",
        _flint(
            "hosted",
            "--port",
            str(hosted_port),
            "--grpc-target",
            grpc_target,
            "--public-url",
            public_url,
        ),
        child_env,
        restartable=False,
    )
    envoy_flags = [f"--grpc-port={port}" for port in grpc_ports]
    envoy = Child(
        "envoy",
        _flint(
            "envoy",
            "--http-port",
            str(http_port),
            "--http-host",
            http_host,
            *envoy_flags,
            "--hosted-port",
            str(hosted_port),
            "--admin-port",
            str(admin_port),
        ),
        dict(os.environ),
        restartable=False,
    )
    started: list[Child] = []
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def keep_waiting() -> bool:
        # Stop waiting for start-up once a child died or a stop was asked for.
        return not stopping and all(child.running() for child in started)

    def launch(*children: Child) -> None:
        for child in children:
            child.start()
            started.append(child)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if store is not None:
            # A restarted store starts empty: callers get a fresh burst, no more.
            launch(store)
            if not wait_for_redis(store_url, STARTUP_TIMEOUT_SECONDS, keep_waiting):
                log_event(logger, "start_failed", level=logging.ERROR, process=store.name)
                return 1
        launch(*replicas)
        for replica, port in zip(replicas, grpc_ports, strict=True):
            if not wait_for_grpc(port, STARTUP_TIMEOUT_SECONDS, keep_waiting):
                log_event(logger, "start_failed", level=logging.ERROR, process=replica.name)
                return 1
        launch(*worker_children, hosted)
        hosted_health = f"http://127.0.0.1:{hosted_port}/hosted/healthz"
        if not wait_for_http(hosted_health, STARTUP_TIMEOUT_SECONDS, keep_waiting):
            log_event(logger, "start_failed", level=logging.ERROR, process="hosted")
            return 1
        launch(envoy)
        if not wait_for_envoy(admin_port, STARTUP_TIMEOUT_SECONDS, keep_waiting):
            log_event(logger, "start_failed", level=logging.ERROR, process="envoy")
            return 1
        grpc_addresses = ", ".join(f"127.0.0.1:{port}" for port in grpc_ports)
        print(
            "\n".join(
                [
                    "",
                    "Flint is up.",
                    f"  REST (through Envoy)  http://{http_host}:{http_port}",
                    f"  hosted pages          {public_url}/oauth/authorize …",
                    f"  gRPC                  {grpc_addresses}",
                    f"  webhook workers       {workers}",
                    f"  database              {db.engine.url.render_as_string()}",
                    "Press Ctrl-C to stop.",
                    "",
                ]
            ),
            flush=True,
        )
        while not stopping:
            now = time.monotonic()
            if not all(child.check(now) for child in started):
                return 1
            time.sleep(0.2)
        return 0
    finally:
        # Envoy first, so no new requests reach a server that is draining.
        _stop_children([envoy], [hosted], worker_children, replicas, [store] if store else [])
        if store_dir is not None:
            store_dir.cleanup()
        with db.unit_of_work() as uow:
            credentials.expire_key(uow.session, internal.record.id, uow.now)
            uow.commit()
        db.dispose()


def _stop_children(*groups: list[Child]) -> None:
    """Stops each group in turn; the members of a group stop side by side."""
    for group in groups:
        running = [(c.name, c.popen) for c in group if c.popen is not None and c.running()]
        for _, popen in running:
            popen.terminate()
        for name, popen in running:
            try:
                popen.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            log_event(logger, "process_stopped", process=name, code=popen.returncode)
