"""Closed-loop load generators: a fixed number of callers, each sending its next
request as soon as the previous one answered, for a fixed time.

gRPC load comes from a grpc.aio client in a process of its own (the machine has
few cores; the load must not share the server's interpreter). REST load comes
from wrk. Both report a `Measurement`: requests completed in the measured
window (after a warm-up), p50/p99 latency and errors."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass

import grpc

from bench.harness import Measurement, percentiles_ms


@dataclass(frozen=True)
class GrpcLoad:
    """One unary method called with the same serialized request over and over."""

    target: str
    method: str  # "/flint.commerce.v1.OrdersService/GetOrder"
    request: bytes
    metadata: tuple[tuple[str, str], ...] = ()
    # Sends a fresh `idempotency-key` with every call (write scenarios).
    idempotency_keys: bool = False
    concurrency: int = 1
    duration: float = 10.0
    warmup: float = 2.0


def measure_grpc(load: GrpcLoad) -> Measurement:
    """Runs `load` in a fresh process (`python -m bench.loadgen`, the load as
    JSON on stdin) and returns what it measured."""
    spec = {
        **asdict(load),
        "request": base64.b64encode(load.request).decode(),
        "metadata": [list(pair) for pair in load.metadata],
    }
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
        timeout=load.warmup + load.duration + 60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{result.stderr}")
    return Measurement(**json.loads(result.stdout))


def main() -> None:
    spec = json.load(sys.stdin)
    load = GrpcLoad(
        **{
            **spec,
            "request": base64.b64decode(spec["request"]),
            "metadata": tuple((name, value) for name, value in spec["metadata"]),
        }
    )
    print(json.dumps(asdict(asyncio.run(_grpc_load(load)))))


async def _grpc_load(load: GrpcLoad) -> Measurement:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(load.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        # Bytes in, bytes out: the client spends nothing on (de)serialising.
        call = channel.unary_unary(load.method, None, None)
        started = time.perf_counter()
        measure_from = started + load.warmup
        stop_at = measure_from + load.duration

        async def caller() -> None:
            nonlocal errors
            while True:
                metadata = load.metadata
                if load.idempotency_keys:
                    metadata = (*metadata, ("idempotency-key", uuid.uuid4().hex))
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                try:
                    await call(load.request, metadata=metadata, timeout=30)
                    failed = False
                except grpc.aio.AioRpcError:
                    failed = True
                done = time.perf_counter()
                if measure_from <= sent and done <= stop_at:
                    if failed:
                        errors += 1
                    else:
                        latencies.append(done - sent)

        await asyncio.gather(*(caller() for _ in range(load.concurrency)))
    p50, p99 = percentiles_ms(latencies)
    return Measurement(
        ops=len(latencies), seconds=load.duration, p50_ms=p50, p99_ms=p99, errors=errors
    )


# --- REST ------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpLoad:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    concurrency: int = 1
    duration: float = 10.0
    warmup: float = 2.0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed (make bench installs it: apt-get install wrk)")
    return path


def measure_http(load: HttpLoad) -> Measurement:
    """GETs `load.url` with wrk (one thread, `concurrency` connections)."""
    headers = [arg for name, value in load.headers for arg in ("-H", f"{name}: {value}")]

    def wrk(seconds: float) -> str:
        result = subprocess.run(  # noqa: S603 - our own command line
            [
                wrk_path(),
                "-t1",
                f"-c{load.concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                *headers,
                load.url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    if load.warmup > 0:
        wrk(load.warmup)
    return parse_wrk(wrk(load.duration))


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> Measurement:
    """Reads requests, duration, errors and the 50%/99% latencies of `wrk --latency`."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (done and p50 and p99):
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    requests = int(done.group(1))
    return Measurement(
        ops=requests - errors,
        seconds=seconds,
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=errors,
    )


if __name__ == "__main__":
    main()
