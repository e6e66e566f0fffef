"""Where a GetOrder's CPU goes: server CPU per call for the bare server, the
floor and Flint under the same gRPC load, then Flint's own steps timed one by
one in this process against the same database (CPU time, not wall time, so a
database round trip's wait does not count).

    python -m bench.breakdown                 # PostgreSQL, concurrency 16
    python -m bench.breakdown --calls 500 --seconds 2

The request-path rows of `make bench` say *how far* Flint is from its
baselines; this says *what* the distance is made of.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench.baseline_server import BaselineServer
from bench.loadgen import GrpcLoad, measure_grpc
from bench.scenarios._support import cpu_seconds
from bench.scenarios.api import GET_ORDER, _bearer, _seed_order
from bench.stack import FlintStack
from flint.commerce import orders, presenter
from flint.commerce.context import tenant_of
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.common.auth import Principal, authenticate


@dataclass(frozen=True)
class ServerCost:
    server: str
    ops_per_second: float
    cpu_ms_per_call: float


@dataclass(frozen=True)
class StepCost:
    step: str
    cpu_us: float


def server_cost(name: str, pid: int, load: GrpcLoad) -> ServerCost:
    before = cpu_seconds(pid)
    measured = measure_grpc(load)
    used = cpu_seconds(pid) - before
    # The server also worked through the warm-up, at about the same rate.
    calls = measured.throughput * (load.duration + load.warmup)
    return ServerCost(name, measured.throughput, used * 1000 / calls if calls else 0.0)


def step_cost(step: str, run: Callable[[], object], calls: int) -> StepCost:
    for _ in range(calls // 10 + 1):  # warm caches and psycopg's prepared statements
        run()
    started = time.process_time()
    for _ in range(calls):
        run()
    return StepCost(step, (time.process_time() - started) * 1e6 / calls)


def measure(
    stack: FlintStack, *, calls: int, seconds: float, concurrency: int
) -> tuple[list[ServerCost], list[StepCost]]:
    order = _seed_order(stack)
    request = orders_pb.GetOrderRequest(id=order.id).SerializeToString()

    def load(target: str, token: str = "") -> GrpcLoad:
        return GrpcLoad(
            target=target,
            method=GET_ORDER,
            request=request,
            metadata=_bearer(token) if token else (),
            concurrency=concurrency,
            duration=seconds,
            warmup=min(1.0, seconds / 2),
        )

    servers = [server_cost("Flint", stack.pids["grpc"], load(stack.grpc_target, stack.app_token))]
    floors = [("bare grpc.aio", "")]
    if stack.database == "postgresql":
        floors.append(("floor: 1 raw PG read", stack.database_url))
    for name, database_url in floors:
        with BaselineServer(order, database_url=database_url) as baseline:
            servers.append(server_cost(name, baseline.pid, load(baseline.target)))

    db = stack.db
    if db is None:
        raise RuntimeError("the stack is not running")
    authorization = f"Bearer {stack.app_token}"

    def auth() -> Principal:
        with db.read() as session:
            return authenticate(session, authorization, db.clock(), issuer=stack.public_url)

    tenant = tenant_of(auth())

    def get_order() -> orders.OrderRecordView:
        with db.read() as session:
            return orders.get_order(session, tenant, order.id)

    view = get_order()

    def order_pb() -> bytes:
        return presenter.order_record_pb(view).SerializeToString()

    def open_session() -> None:
        with db.read():
            pass

    steps = [
        step_cost("open and close a read session", open_session, calls),
        step_cost("authenticate an app token (cached)", auth, calls),
        step_cost("get_order: the order and its parts (ORM)", get_order, calls),
        step_cost("order_pb and serialize", order_pb, calls),
    ]
    if stack.database == "postgresql":
        libpq_url = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq_url, autocommit=True) as connection:

            def raw_read() -> object:
                return connection.execute(
                    "SELECT * FROM orders WHERE id = %s", (order.id,), prepare=True
                ).fetchone()

            steps.append(step_cost("for scale: the order's row, raw psycopg", raw_read, calls))
    return servers, steps


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--calls", type=int, default=3000, help="calls per in-process step")
    parser.add_argument("--seconds", type=float, default=5.0, help="load per server")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with FlintStack(args.database) as stack:
        servers, steps = measure(
            stack, calls=args.calls, seconds=args.seconds, concurrency=args.concurrency
        )
    print(f"GetOrder over gRPC at concurrency {args.concurrency}, {args.database}:")
    for server in servers:
        print(
            f"  {server.server:24s} {server.ops_per_second:8,.0f} ops/s"
            f"  {server.cpu_ms_per_call:6.2f} ms server CPU per call"
        )
    print("Flint's steps, in this process (CPU per call):")
    for step in steps:
        print(f"  {step.step:44s} {step.cpu_us:8.1f} µs")


if __name__ == "__main__":
    main()
