"""Pieces the delivery and stream scenarios share: a webhook receiver fast
enough never to be the bottleneck (its own process, raw asyncio HTTP/1.1 with
keep-alive), the baseline sender, seeding helpers and statistics.

Run as a module it is one of the child processes:

    python -m bench.scenarios._support receiver PORT LOGFILE [hang]
    python -m bench.scenarios._support baseline URL COUNT CONCURRENCY SECRET
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.harness import Measurement
from bench.stack import FlintStack, free_port
from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.common.db import Database
from flint.webhooks.v1 import webhooks_service_pb2 as webhooks_pb
from flint.webhooks.v1 import webhooks_service_pb2_grpc as webhooks_grpc

REPO = Path(__file__).resolve().parents[2]
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
# A body of the size a real order event has, for the baseline.
BASELINE_BODY_BYTES = 1400


# --- statistics --------------------------------------------------------------------


def stack_db(stack: FlintStack) -> Database:
    """The stack's database, for seeding and reading results directly."""
    if stack.db is None:
        raise RuntimeError("the stack is not running")
    return stack.db


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


def measurement(
    ops: int, seconds: float, latencies_ms: list[float], errors: int = 0
) -> Measurement:
    return Measurement(
        ops=ops,
        seconds=seconds,
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        errors=errors,
    )


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:.0f} s")
        time.sleep(interval)


# --- child processes ------------------------------------------------------------------


def module_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.scenarios._support", *args]


@dataclass
class Receiver:
    """The receiver process; with a log file it writes `webhook-id arrival-time`
    per request (for latency), without one it only answers."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def arrivals(self) -> dict[str, float]:
        if self.log is None or not self.log.exists():
            return {}
        found: dict[str, float] = {}
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                found.setdefault(parts[0], float(parts[1]))
        return found


@contextmanager
def receiver(log: Path | None = None, *, hang: bool = False) -> Iterator[Receiver]:
    """With `hang`, the receiver reads each request and never answers (an
    endpoint that hangs past the sender's timeout)."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own command line
        module_command("receiver", str(port), str(log or ""), *(["hang"] if hang else [])),
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        if process.stdout is None or process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the webhook receiver did not start")
        yield Receiver(process, port, log)
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def run_baseline(url: str, count: int, concurrency: int, secret: str) -> tuple[Measurement, float]:
    """Signed POSTs from one fresh Python process, as fast as it can; with the
    CPU seconds the sending took."""
    out = subprocess.run(  # noqa: S603 - our own command line
        module_command("baseline", url, str(count), str(concurrency), secret),
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=600,
    )
    data = json.loads(out.stdout)
    result = measurement(data["ops"], data["seconds"], data["latencies_ms"], data["errors"])
    return result, float(data["cpu_seconds"])


# --- seeding ----------------------------------------------------------------------------


def create_endpoint(stack: FlintStack, url: str) -> webhooks_pb.WebhookEndpoint:
    """A test endpoint of the seeded app taking every order event."""
    if stack.seeded is None:
        raise RuntimeError("the stack is not seeded")
    with grpc.insecure_channel(stack.grpc_target) as channel:
        endpoint: webhooks_pb.WebhookEndpoint = webhooks_grpc.WebhooksServiceStub(
            channel
        ).CreateWebhookEndpoint(
            webhooks_pb.CreateWebhookEndpointRequest(
                app_id=stack.seeded.app.id,
                webhook_endpoint=webhooks_pb.WebhookEndpoint(
                    url=url,
                    enabled_events=["order.*"],
                    environments=[accounts_pb.ENVIRONMENT_TEST],
                ),
            ),
            metadata=(("authorization", f"Bearer {stack.partner_key}"),),
        )
    return endpoint


# --- the receiver process ---------------------------------------------------------------


class _ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: answers 200 to each request as soon as its
    body is in. Enough HTTP for the webhook sender (no chunked bodies)."""

    def __init__(self, log: Any, hang: bool = False) -> None:
        self._log = log
        self._hang = hang
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].decode("latin-1")
            length = 0
            webhook_id = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "webhook-id":
                    webhook_id = value.strip()
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            if self._log is not None:
                self._log.write(f"{webhook_id} {time.time():.6f}\n")
            if self._transport is not None and not self._hang:
                self._transport.write(RESPONSE)


async def _serve(port: int, log_path: str, hang: bool = False) -> None:
    log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _ReceiverProtocol(log, hang), "127.0.0.1", port, backlog=1024
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# --- the baseline process ---------------------------------------------------------------


async def _baseline(url: str, count: int, concurrency: int, secret: str) -> dict[str, Any]:
    """The worker's HTTP client used the same way (one aiohttp session, a pool of
    `concurrency` keep-alive connections, `concurrency` POSTs in flight), minus
    everything else a worker does."""
    import aiohttp  # noqa: PLC0415 - only the baseline child needs it

    from flint.webhooks import signing  # noqa: PLC0415

    body = json.dumps({"id": "evt_x", "data": "x" * BASELINE_BODY_BYTES}).encode()
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(count))

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for _ in remaining:
            started = time.perf_counter()
            message_id = "evt_" + secrets.token_hex(12)
            headers = {
                "content-type": "application/json",
                "user-agent": "Flint-Webhooks/1",
                **signing.headers([secret], message_id, int(time.time()), body),
            }
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        started = time.perf_counter()
        cpu_started = time.process_time()
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    return {
        "ops": count,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "latencies_ms": latencies,
        "errors": errors,
    }


def main(argv: list[str]) -> None:
    role = argv[0]
    if role == "receiver":
        asyncio.run(_serve(int(argv[1]), argv[2], argv[3:] == ["hang"]))
    elif role == "baseline":
        url, count, concurrency, secret = argv[1], int(argv[2]), int(argv[3]), argv[4]
        result = asyncio.run(_baseline(url, count, concurrency, secret))
        json.dump(result, sys.stdout)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
