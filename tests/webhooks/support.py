"""Real webhook receivers (HTTP servers on loopback) and helpers to drive
endpoints, workers and events in tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import select

from flint.common.db import Database
from flint.webhooks.models import WebhookAttemptRecord, WebhookDeliveryRecord
from flint.webhooks.sender import DeliverySettings
from flint.webhooks.worker import Worker

FAST_SCHEDULE = (timedelta(seconds=0.2), timedelta(seconds=0.2), timedelta(seconds=0.2))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


# What the receiver does with one request: (status, body, extra headers), or
# "hang" to hold the request until released, or "close" to drop the connection.
Behaviour = tuple[int, bytes, dict[str, str]] | str


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request. `plan` holds
    the answers to give in order; after it runs out, `default` is given."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    plan: list[Behaviour] = field(default_factory=list)
    default: Behaviour = (200, b"ok", {})
    # Seconds each request is held before it is answered (a receiver with work to do).
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def next_behaviour(self) -> Behaviour:
        with self.lock:
            return self.plan.pop(0) if self.plan else self.default

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")

    def ids(self) -> list[str]:
        with self.lock:
            return [r.headers["webhook-id"] for r in self.requests]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
            time.sleep(receiver.delay)
            behaviour = receiver.next_behaviour()
            if behaviour == "hang":
                receiver.release.wait(60)
                return
            if behaviour == "close":
                self.close_connection = True
                return
            assert not isinstance(behaviour, str)
            status, payload, headers = behaviour
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    # Several workers connect at once; the default backlog of 5 would drop some.
    request_queue_size = 128


@contextmanager
def receiver(*plan: Behaviour) -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    running = Receiver(server, plan=list(plan))
    server.RequestHandlerClass = _handler(running)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.release.set()
        server.shutdown()
        server.server_close()


def fast_settings(**overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "schedule": FAST_SCHEDULE,
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "total_timeout": 2.0,
        "lease": timedelta(seconds=3),
        # Short breaker pauses, like the short retry schedule.
        "pause_min": timedelta(seconds=0.2),
        "pause_max": timedelta(seconds=0.2),
        "allow_loopback": True,
    }
    values.update(overrides)
    return DeliverySettings(**values)


@contextmanager
def running_worker(
    db: Database, settings: DeliverySettings | None = None, *, poll_seconds: float = 0.05
) -> Iterator[Worker]:
    """A worker on a thread, polling fast, stopped (and drained) on exit."""
    worker = Worker(db, settings or fast_settings(), concurrency=4, poll_seconds=poll_seconds)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(15)


def deliveries(db: Database, endpoint_id: str) -> list[WebhookDeliveryRecord]:
    with db.read() as session:
        return list(
            session.scalars(
                select(WebhookDeliveryRecord)
                .where(WebhookDeliveryRecord.endpoint_id == endpoint_id)
                .order_by(WebhookDeliveryRecord.id)
            )
        )


def attempts(db: Database, delivery_id: str) -> list[WebhookAttemptRecord]:
    with db.read() as session:
        return list(
            session.scalars(
                select(WebhookAttemptRecord)
                .where(WebhookAttemptRecord.delivery_id == delivery_id)
                .order_by(WebhookAttemptRecord.number)
            )
        )


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Retries `check` until it returns something truthy without raising."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (AssertionError, LookupError) as error:
            last = error
        else:
            if value:
                return value
        time.sleep(0.05)
    if last is not None:
        raise last
    raise AssertionError("condition not met in time")
