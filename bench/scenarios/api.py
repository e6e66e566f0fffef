"""The request path: GetOrder and CreateOrder over gRPC with an app token, and
GetOrder over REST through Envoy, at concurrency 1, 16 and 64.

Baselines, measured in the same run right beside the Flint measurement they
are compared with:
- gRPC: a bare grpc.aio server with the same generated stub returning the same
  Order from memory (bench/baseline_server.py);
- also reported on PostgreSQL, beside it: the *floor*, the same bare server
  doing only one raw database read (GetOrder) or one transaction of three
  inserts (CreateOrder) per call — the ratio to the bare server no server that
  keeps its data in PostgreSQL can beat here; Flint's rows note how close to it
  they come (`vs_floor`);
- REST through Envoy: Flint's own GetOrder over direct gRPC;
- SQLite: the same scenario on PostgreSQL.

Targets are judged at concurrency 16 and 64 (throughput under load); at
concurrency 1 a request waits for the one before it, so the ratio there is only
a latency ratio and is reported, not judged."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import grpc

from bench.baseline_server import BaselineServer
from bench.harness import Measurement, Row, rss_mb
from bench.loadgen import GrpcLoad, HttpLoad, measure_grpc, measure_http
from bench.stack import DatabaseKind, FlintStack
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import resources_pb2 as pb

CONCURRENCY = (1, 16, 64)
JUDGED_AT = frozenset({16, 64})
GET_ORDER = "/flint.commerce.v1.OrdersService/GetOrder"
CREATE_ORDER = "/flint.commerce.v1.OrdersService/CreateOrder"

GET_TARGET = 0.50
CREATE_TARGET = 0.30
CREATE_P99_LIMIT = 4.0
REST_TARGET = 0.80


def new_order_request() -> orders_pb.CreateOrderRequest:
    return orders_pb.CreateOrderRequest(
        order=pb.Order(
            currency="usd",
            customer_email="bench@example.com",
            line_items=[
                pb.LineItem(name="T-shirt", quantity=2, unit_amount=1500),
                pb.LineItem(name="Mug", quantity=1, unit_amount=900),
            ],
            metadata={"source": "bench"},
        )
    )


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Runs:
    """How long each measurement runs, and at which concurrency levels."""

    duration: float = 5.0
    warmup: float = 1.0
    levels: tuple[int, ...] = CONCURRENCY

    @classmethod
    def for_mode(cls, quick: bool) -> Runs:
        return cls(duration=1.0, warmup=0.5, levels=(16,)) if quick else cls()

    def grpc(
        self,
        target: str,
        method: str,
        request: bytes,
        token: str,
        level: int,
        *,
        write: bool = False,
    ) -> Measurement:
        return measure_grpc(
            GrpcLoad(
                target=target,
                method=method,
                request=request,
                metadata=_bearer(token),
                idempotency_keys=write,
                concurrency=level,
                duration=self.duration,
                warmup=self.warmup,
            )
        )

    def rest(self, url: str, token: str, level: int) -> Measurement:
        return measure_http(
            HttpLoad(
                url=url,
                headers=(("Authorization", f"Bearer {token}"),),
                concurrency=level,
                duration=self.duration,
                warmup=self.warmup,
            )
        )


def _share(flint: Measurement, floor: Measurement) -> str:
    return f"{flint.throughput / floor.throughput:.2f}" if floor.throughput else "-"


def _judged(level: int, holds: bool) -> bool | None:
    return holds if level in JUDGED_AT else None


def _seed_order(stack: FlintStack) -> pb.Order:
    """One order to read, as Flint returns it from GetOrder."""
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = orders_grpc.OrdersServiceStub(channel)
        created = stub.CreateOrder(new_order_request(), metadata=_bearer(stack.app_token))
        return stub.GetOrder(
            orders_pb.GetOrderRequest(id=created.id), metadata=_bearer(stack.app_token)
        )


def measure_database(
    database: DatabaseKind, runs: Runs, postgres: dict[tuple[str, int], Measurement]
) -> list[Row]:
    """Every scenario against one database. On PostgreSQL the rows are compared
    with their baselines; on SQLite with the PostgreSQL rows in `postgres`."""
    rows: list[Row] = []
    with FlintStack(database, envoy=True) as stack:
        order = _seed_order(stack)
        get_request = orders_pb.GetOrderRequest(id=order.id).SerializeToString()
        create_request = new_order_request().SerializeToString()
        rest_url = f"{stack.rest_url}/v1/orders/{order.id}"
        floor = (
            BaselineServer(order, database_url=stack.database_url)
            if database == "postgresql"
            else nullcontext()
        )
        with BaselineServer(order) as bare, floor as floor_server:
            for level in runs.levels:
                flint_get = runs.grpc(
                    stack.grpc_target, GET_ORDER, get_request, stack.app_token, level
                )
                rest_get = runs.rest(rest_url, stack.app_token, level)
                flint_create = runs.grpc(
                    stack.grpc_target,
                    CREATE_ORDER,
                    create_request,
                    stack.app_token,
                    level,
                    write=True,
                )
                memory = {"server_rss_mb": f"{rss_mb(stack.pids['grpc']):.0f}"}
                if database == "sqlite":
                    rows += _sqlite_rows(level, postgres, flint_get, rest_get, flint_create, memory)
                    continue
                postgres[("get", level)] = flint_get
                postgres[("rest", level)] = rest_get
                postgres[("create", level)] = flint_create
                # The bare server is measured right after, under the same conditions.
                bare_get = runs.grpc(bare.target, GET_ORDER, get_request, stack.app_token, level)
                bare_create = runs.grpc(
                    bare.target, CREATE_ORDER, create_request, stack.app_token, level, write=True
                )
                assert floor_server is not None  # noqa: S101 - started for PostgreSQL
                floor_target = floor_server.target
                floor_get = runs.grpc(floor_target, GET_ORDER, get_request, stack.app_token, level)
                floor_create = runs.grpc(
                    floor_target, CREATE_ORDER, create_request, stack.app_token, level, write=True
                )
                memory["vs_floor"] = _share(flint_get, floor_get)
                rows.append(
                    Row(
                        "GetOrder gRPC app token",
                        database,
                        level,
                        flint_get,
                        bare_get,
                        "bare grpc.aio",
                        target=f"QPS >= {GET_TARGET:.2f}x",
                        notes=memory,
                    )
                )
                rows[-1].met = _judged(level, (rows[-1].ratio or 0) >= GET_TARGET)
                create_row = Row(
                    "CreateOrder idem+outbox",
                    database,
                    level,
                    flint_create,
                    bare_create,
                    "bare grpc.aio",
                    target=f"QPS >= {CREATE_TARGET:.2f}x, p99 <= {CREATE_P99_LIMIT:.0f}x",
                )
                p99_ratio = flint_create.p99_ms / bare_create.p99_ms if bare_create.p99_ms else 0
                create_row.notes["p99_ratio"] = f"{p99_ratio:.1f}"
                create_row.notes["vs_floor"] = _share(flint_create, floor_create)
                create_row.met = _judged(
                    level,
                    (create_row.ratio or 0) >= CREATE_TARGET and p99_ratio <= CREATE_P99_LIMIT,
                )
                rows.append(create_row)
                rows += [
                    Row(scenario, database, level, measured, bare_measured, "bare grpc.aio")
                    for scenario, measured, bare_measured in (
                        ("GetOrder floor: 1 PG read", floor_get, bare_get),
                        ("CreateOrder floor: 1 PG txn", floor_create, bare_create),
                    )
                ]
                rest_row = Row(
                    "GetOrder REST via Envoy",
                    database,
                    level,
                    rest_get,
                    flint_get,
                    "gRPC direct",
                    target=f"QPS >= {REST_TARGET:.2f}x",
                )
                rest_row.met = _judged(level, (rest_row.ratio or 0) >= REST_TARGET)
                rows.append(rest_row)
    return rows


def _sqlite_rows(
    level: int,
    postgres: dict[tuple[str, int], Measurement],
    flint_get: Measurement,
    rest_get: Measurement,
    flint_create: Measurement,
    memory: dict[str, str],
) -> list[Row]:
    def row(scenario: str, key: str, measured: Measurement, notes: dict[str, str]) -> Row:
        return Row(
            scenario,
            "sqlite",
            level,
            measured,
            postgres.get((key, level)),
            "PostgreSQL",
            target="reported",
            notes=notes,
        )

    return [
        row("GetOrder gRPC app token", "get", flint_get, memory),
        row("CreateOrder idem+outbox", "create", flint_create, {}),
        row("GetOrder REST via Envoy", "rest", rest_get, {}),
    ]


def run(quick: bool) -> list[Row]:
    runs = Runs.for_mode(quick)
    postgres: dict[tuple[str, int], Measurement] = {}
    rows = measure_database("postgresql", runs, postgres)
    rows += measure_database("sqlite", runs, postgres)
    return rows
