"""Fixtures for `flint listen`: the real stack (gRPC server + Envoy), a local
HTTP receiver on loopback, and `flint listen` run as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from flint.common.db import Database
from flint.events.v1 import events_service_pb2 as events_pb
from flint.events.v1 import events_service_pb2_grpc as events_grpc
from tests.commerce.support import Commerce
from tests.conftest import Edge, MerchantCreds, bearer
from tests.installs.oauth_support import internal_key

# The console script installed next to the interpreter running the tests.
FLINT = Path(sys.executable).parent / "flint"
READY = re.compile(r"^Ready! Your webhook signing secret is (whsec_\S+) \(\^C to quit\)$")
TIMEOUT = 20.0


def poll(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A plugin's webhook endpoint on loopback; answers `status` to every POST."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.status = status
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received()]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@dataclass
class Listener:
    """`flint listen` running as a subprocess; its output collected line by line."""

    popen: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    _collectors: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err)):
            collector = threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            collector.start()
            self._collectors.append(collector)

    @staticmethod
    def _collect(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.out, "--- stderr", *self.err])

    def wait_ready(self) -> str:
        """Waits for the Ready line (printed once the stream is open) and returns the secret."""
        poll(
            lambda: any(READY.match(line) for line in self.out) or self.popen.poll() is not None,
            what="Ready!",
        )
        ready = [m for m in map(READY.match, self.out) if m]
        assert ready, self.output()
        return ready[0].group(1)

    def event_lines(self) -> list[str]:
        return [line for line in self.out if "-->" in line]

    def wait_lines(self, count: int) -> list[str]:
        poll(lambda: len(self.event_lines()) >= count, what=f"{count} event lines")
        return self.event_lines()

    def interrupt(self) -> int:
        """Ctrl-C."""
        self.popen.send_signal(signal.SIGINT)
        return self.wait_exit()

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        code = self.popen.wait(timeout)
        for collector in self._collectors:  # every line, once the pipes close
            collector.join(timeout)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.wait_exit()
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


class Listen:
    """Starts `flint listen` with a merchant's key, against the test's Envoy."""

    def __init__(self, edge: Edge, home: Path) -> None:
        self.edge = edge
        self.home = home
        self.state_dir = home / "state"
        self.started: list[Listener] = []

    def env(self, api_key: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}
        return {**env, "HOME": str(self.home), "FLINT_API_KEY": api_key, **extra}

    def start(self, api_key: str, *args: str, api_url: bool = True, **extra_env: str) -> Listener:
        command = [str(FLINT), "listen", "--state-dir", str(self.state_dir), *args]
        if api_url:
            command += ["--api-url", self.edge.url]
        popen = subprocess.Popen(
            command,
            env=self.env(api_key, **extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        listener = Listener(popen)
        self.started.append(listener)
        return listener

    def run(self, api_key: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A run expected to end by itself (a refusal, --print-secret)."""
        return subprocess.run(
            [str(FLINT), "listen", "--state-dir", str(self.state_dir), *args],
            env=self.env(api_key),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def listen(edge: Edge, tmp_path: Path) -> Iterator[Listen]:
    assert FLINT.is_file(), f"no flint console script at {FLINT}"
    home = tmp_path / "home"
    home.mkdir()
    starter = Listen(edge, home)
    yield starter
    for listener in starter.started:
        listener.stop()


@pytest.fixture(scope="session")
def internal(db: Database) -> str:
    return internal_key(db)


@pytest.fixture
def shop(channel: grpc.Channel, new_merchant: MerchantCreds, internal: str) -> Commerce:
    return Commerce(channel, new_merchant.test_key, internal)


def listed_events(
    channel: grpc.Channel, credential: str, types: tuple[str, ...] = ()
) -> list[events_pb.Event]:
    """Every event the credential may see, oldest first, through ListEvents."""
    stub = events_grpc.EventsServiceStub(channel)
    events: list[events_pb.Event] = []
    after = ""
    while True:
        page = stub.ListEvents(
            events_pb.ListEventsRequest(page_size=100, after=after, types=list(types)),
            metadata=bearer(credential),
        )
        events.extend(page.events)
        after = page.next_cursor
        if not page.has_more:
            return events
