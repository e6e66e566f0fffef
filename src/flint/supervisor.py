"""`flint up`: migrate, then run every Flint process (gRPC server, webhook
worker, hosted web app, Envoy) as a child and stop them all together."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flint.accounts import service as accounts
from flint.common import credentials
from flint.common.config import Settings
from flint.common.db import Database
from flint.common.logs import log_event
from flint.migrations import migrate
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV

logger = logging.getLogger("flint.up")
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


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


def run_stack(
    *, http_port: int, grpc_port: int, hosted_port: int, admin_port: int, http_host: str
) -> int:
    settings = Settings.from_env()
    db = Database(settings.database_url)
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
        # Local development: webhook endpoints may be http://127.0.0.1 receivers.
        ALLOW_LOOPBACK_ENV: os.environ.get(ALLOW_LOOPBACK_ENV, "1"),
    }

    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def keep_waiting() -> bool:
        # Stop waiting for start-up once a child died or a stop was asked for.
        return not stopping and all(child.poll() is None for child in children.values())

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        children["grpc"] = subprocess.Popen(  # noqa: S603
            _flint("serve", "--port", str(grpc_port)), env=child_env
        )
        if not wait_for_grpc(grpc_port, STARTUP_TIMEOUT_SECONDS, keep_waiting):
            log_event(logger, "start_failed", level=logging.ERROR, process="grpc")
            return 1
        children["worker"] = subprocess.Popen(_flint("worker"), env=child_env)  # noqa: S603
        children["hosted"] = subprocess.Popen(  # noqa: S603
            _flint(
                "hosted",
                "--port",
                str(hosted_port),
                "--grpc-target",
                f"127.0.0.1:{grpc_port}",
                "--public-url",
                public_url,
            ),
            env=child_env,
        )
        hosted_health = f"http://127.0.0.1:{hosted_port}/hosted/healthz"
        if not wait_for_http(hosted_health, STARTUP_TIMEOUT_SECONDS, keep_waiting):
            log_event(logger, "start_failed", level=logging.ERROR, process="hosted")
            return 1
        children["envoy"] = subprocess.Popen(  # noqa: S603
            _flint(
                "envoy",
                "--http-port",
                str(http_port),
                "--http-host",
                http_host,
                "--grpc-port",
                str(grpc_port),
                "--hosted-port",
                str(hosted_port),
                "--admin-port",
                str(admin_port),
            )
        )
        if not wait_for_envoy(admin_port, STARTUP_TIMEOUT_SECONDS, keep_waiting):
            log_event(logger, "start_failed", level=logging.ERROR, process="envoy")
            return 1
        print(
            "\n".join(
                [
                    "",
                    "Flint is up.",
                    f"  REST (through Envoy)  http://{http_host}:{http_port}",
                    f"  hosted pages          {public_url}/oauth/authorize …",
                    f"  gRPC                  127.0.0.1:{grpc_port}",
                    f"  database              {db.engine.url.render_as_string()}",
                    "Press Ctrl-C to stop.",
                    "",
                ]
            ),
            flush=True,
        )
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    log_event(
                        logger,
                        "process_exited",
                        level=logging.ERROR,
                        process=name,
                        code=child.returncode,
                    )
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop_children(children)
        with db.unit_of_work() as uow:
            credentials.expire_key(uow.session, internal.record.id, uow.now)
            uow.commit()
        db.dispose()


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    # Envoy first, so no new requests reach a server that is draining.
    for name in ("envoy", "hosted", "worker", "grpc"):
        child = children.get(name)
        if child is None or child.poll() is not None:
            continue
        child.terminate()
        try:
            child.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log_event(logger, "process_stopped", process=name, code=child.returncode)
