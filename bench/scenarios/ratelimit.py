"""The API rate limiter's cost: GetOrder over gRPC with an app token on three
`flint serve` processes sharing one PostgreSQL database, measured one after
the other in the same run:

- limiter off (`FLINT_RATE_LIMITS=off`): the baseline;
- limiter in the process (no store configured: one `flint serve`);
- limiter in Redis (`FLINT_RATE_LIMIT_URL`, what `flint up --replicas N` uses):
  one Lua script round trip per call.

The limits are set far above the load so no call is refused: what is measured
is the check itself. Target (issue 13): each costs under 10 % of throughput.
The three are measured in turns (off, local, redis, again…) and each row
reports the best of its turns against the best baseline turn, so a burst of
noise on the shared machine does not land on one side only.

Throughput on a busy machine is noisy, so each row also notes the check's own
cost, measured in this process: CPU µs per `RateLimits.check` (what the server
spends) and wall µs (what a call waits, Redis' round trip included), and that
wall time as a share of GetOrder's ~1.2 ms of server CPU (bench.breakdown).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from bench.harness import Measurement, Row
from bench.scenarios.api import GET_ORDER, Runs, _seed_order
from bench.stack import DatabaseKind, FlintStack, flint_command, free_port
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import Database
from flint.common.ratelimit import Limiter, LocalStore, RedisStore
from flint.server.ratelimit import Defaults, RateLimits
from flint.supervisor import stop_process, wait_for_grpc, wait_for_redis

TARGET = 0.90
LEVEL = 16
GETORDER_SERVER_CPU_US = 1200
CHECKS = 2000
# Far above what one machine can send: every call is checked, none refused.
UNREFUSED = {
    "FLINT_RATE_LIMIT_TEST_PER_SECOND": "10000000",
    "FLINT_RATE_LIMIT_LIVE_PER_SECOND": "10000000",
}


@contextmanager
def redis_server() -> Iterator[str]:
    """A private Redis (Debian's redis-server) on a free port, nothing saved."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flint-bench-redis-") as directory:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        child = subprocess.Popen(  # noqa: S603 - our own command line
            [*command, "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            if not wait_for_redis(url, 30):
                raise RuntimeError("redis-server did not start")
            yield url
        finally:
            stop_process(child)


def _serve(stack: FlintStack, name: str, env: dict[str, str]) -> str:
    port = free_port()
    stack.start_process(name, flint_command("serve", "--port", str(port)), env=env)
    if not wait_for_grpc(port, 60):
        raise RuntimeError(f"{name} did not start:\n{stack.log(name)}")
    return f"127.0.0.1:{port}"


def _best(measurements: list[Measurement]) -> Measurement:
    return max(measurements, key=lambda m: m.throughput)


def run(quick: bool) -> list[Row]:
    # Short turns, many of them: the best of each side is compared.
    return measure("postgresql", Runs.for_mode(True), turns=5 if quick else 10, level=LEVEL)


def measure(database: DatabaseKind, runs: Runs, *, turns: int, level: int) -> list[Row]:
    off = {**UNREFUSED, "FLINT_RATE_LIMITS": "off"}
    with FlintStack(database, extra_env=off) as stack, redis_server() as redis_url:
        targets = {
            "off": stack.grpc_target,
            "local": _serve(stack, "grpc-local", {"FLINT_RATE_LIMITS": "on"}),
            "redis": _serve(
                stack,
                "grpc-redis",
                {"FLINT_RATE_LIMITS": "on", "FLINT_RATE_LIMIT_URL": redis_url},
            ),
        }
        order = _seed_order(stack)
        request = orders_pb.GetOrderRequest(id=order.id).SerializeToString()
        _check_limited(targets, request, stack.app_token)
        seen: dict[str, list[Measurement]] = {name: [] for name in targets}
        for _ in range(turns):
            for name, target in targets.items():
                seen[name].append(runs.grpc(target, GET_ORDER, request, stack.app_token, level))
        assert stack.db is not None  # noqa: S101 - set once the stack started
        redis_store = RedisStore(redis_url)
        costs = {
            "local": check_cost(stack.db, Limiter(LocalStore())),
            "redis": check_cost(stack.db, Limiter(redis_store)),
        }
        redis_store.close()
    baseline = _best(seen["off"])
    rows = []
    for name, label in (("local", "in process"), ("redis", "Redis")):
        row = Row(
            f"GetOrder, rate limiter {label}",
            database,
            level,
            _best(seen[name]),
            baseline,
            "limiter off",
            target=f"QPS >= {TARGET:.2f}x",
            notes=costs[name],
        )
        row.met = (row.ratio or 0) >= TARGET
        rows.append(row)
    return rows


def _check_limited(targets: dict[str, str], request: bytes, token: str) -> None:
    """The limiter is on where it should be (RateLimit fields) and off elsewhere,
    so the rows measure what they say."""
    for name, target in targets.items():
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(GET_ORDER)
            _, outcome = call.with_call(request, metadata=(("authorization", f"Bearer {token}"),))
            fields = dict(outcome.trailing_metadata() or ())
            if ("ratelimit-limit" in fields) != (name != "off"):
                raise RuntimeError(f"{name}: rate limiter {'missing' if name != 'off' else 'on'}")


def check_cost(db: Database, limiter: Limiter) -> dict[str, str]:
    """CPU and wall µs of one limiter check, as the pipeline makes it."""
    limits = RateLimits(db, limiter, Defaults(10_000_000, 10_000_000))
    caller = Principal(
        PrincipalKind.APP, "ins_bench", "test", merchant_id="mer_bench", app_id="app_bench"
    )
    limits.check(caller, write=False)  # the override lookup, then cached
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(CHECKS):
        limits.check(caller, write=False)
    cpu_us = (time.thread_time() - cpu) / CHECKS * 1e6
    wall_us = (time.perf_counter() - wall) / CHECKS * 1e6
    return {
        "check_cpu_us": f"{cpu_us:.1f}",
        "check_wall_us": f"{wall_us:.1f}",
        "wall_vs_getorder_cpu": f"{wall_us / GETORDER_SERVER_CPU_US:.1%}",
    }
