"""Webhook delivery: throughput of one `flint worker` against raw signed POSTs
from one Python process with the same HTTP client (aiohttp: one session,
CONCURRENCY keep-alive connections and requests in flight), and the latency from
commit to the receiver on an idle system.

Throughput: N order events are committed with an endpoint subscribed (through
the domain layer, in a few transactions), the server fans them out, then one
worker starts and sends them all to a receiver that answers 200 at once. The
rate is N over the span from the first attempt's start to the last attempt's
end, read from the attempts table (every attempt is stored).

Latency: with server and worker running and nothing else to do, one order at a
time is created over gRPC; each event's `created_at` (the commit's timestamp)
is compared with the moment the receiver got its webhook.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from sqlalchemy import func, select, text, update

from bench.harness import Row
from bench.scenarios._support import (
    Receiver,
    cpu_seconds,
    create_endpoint,
    measurement,
    receiver,
    run_baseline,
    stack_db,
    wait_for,
)
from bench.stack import DatabaseKind, FlintStack, flint_command
from flint.commerce import orders
from flint.commerce.context import Actor, Tenant
from flint.commerce.lines import LineInput
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import resources_pb2 as commerce_pb
from flint.common.events import EventRecord
from flint.webhooks.models import WebhookAttemptRecord, WebhookDeliveryRecord
from flint.webhooks.worker import NOTIFY_CHANNEL

DATABASES: tuple[DatabaseKind, ...] = ("postgresql", "sqlite")
# The worker's and the baseline's requests in flight at once.
CONCURRENCY = 16
PRELOAD_BATCH = 500
THROUGHPUT_TARGET = 0.70
THROUGHPUT_FLOOR = 1000.0
LATENCY_P50_MS = 50.0
LATENCY_P99_MS = 250.0
# Between two orders of the latency run, so the system is idle for each.
LATENCY_GAP_SECONDS = 0.1


def preload_orders(stack: FlintStack, count: int) -> None:
    """`count` orders (one `order.created` each), committed in a few transactions."""
    db = stack_db(stack)
    tenant = Tenant(stack.merchant_id, "test")
    actor = Actor("merchant", stack.merchant_id, "")
    made = 0
    while made < count:
        with db.unit_of_work() as uow:
            for _ in range(min(PRELOAD_BATCH, count - made)):
                orders.create_order(
                    uow,
                    tenant,
                    actor,
                    lines=[LineInput("T-shirt", 2, 1500)],
                    currency="usd",
                    customer_email="buyer@example.com",
                    metadata={"bench": "delivery"},
                )
                made += 1
            uow.commit()


def _count_deliveries(stack: FlintStack, endpoint_id: str) -> int:
    with stack_db(stack).read() as session:
        return int(
            session.scalar(
                select(func.count()).where(WebhookDeliveryRecord.endpoint_id == endpoint_id)
            )
            or 0
        )


def _succeeded_attempts(stack: FlintStack, endpoint_id: str) -> list[WebhookAttemptRecord]:
    with stack_db(stack).read() as session:
        return list(
            session.scalars(
                select(WebhookAttemptRecord).where(
                    WebhookAttemptRecord.endpoint_id == endpoint_id,
                    WebhookAttemptRecord.outcome == "succeeded",
                )
            )
        )


def _hold(stack: FlintStack, endpoint_id: str, until: datetime) -> None:
    """Makes the endpoint's pending deliveries due at `until` (and, when that is
    now, wakes the workers as the sequencer does after a fan-out)."""
    db = stack_db(stack)
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(WebhookDeliveryRecord)
            .where(
                WebhookDeliveryRecord.endpoint_id == endpoint_id,
                WebhookDeliveryRecord.status == "pending",
            )
            .values(next_attempt_at=until)
        )
        if not db.is_sqlite:
            uow.session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        uow.commit()


def throughput(database: DatabaseKind, count: int) -> Row:
    """All `count` deliveries are made due at once, after the worker is up; the
    clock runs from then until the last attempt is stored."""
    with FlintStack(database=database) as stack, receiver() as rx:
        endpoint = create_endpoint(stack, rx.url)
        preload_orders(stack, count)
        wait_for(lambda: _count_deliveries(stack, endpoint.id) >= count, timeout=300)
        _hold(stack, endpoint.id, datetime.now(UTC) + timedelta(days=1))
        worker = stack.start_process(
            "worker", flint_command("worker", "--concurrency", str(CONCURRENCY))
        )
        wait_for(lambda: "webhook worker running" in stack.log("worker"), timeout=60)
        time.sleep(1)  # past its start-up work (imports, first poll)
        cpu_before = cpu_seconds(worker.pid)
        released = datetime.now(UTC)
        _hold(stack, endpoint.id, released)
        wait_for(
            lambda: len(_succeeded_attempts(stack, endpoint.id)) >= count or worker.poll(),
            timeout=600,
            interval=0.1,
        )
        cpu = cpu_seconds(worker.pid) - cpu_before
        done = _succeeded_attempts(stack, endpoint.id)
        if len(done) < count:
            raise RuntimeError(f"the worker stopped:\n{stack.log('worker')}")
        with stack_db(stack).read() as session:
            last = session.scalar(
                select(func.max(WebhookDeliveryRecord.updated_at)).where(
                    WebhookDeliveryRecord.endpoint_id == endpoint.id
                )
            )
        if last is None:
            raise RuntimeError("no delivery was stored")
        flint = measurement(
            len(done), (last - released).total_seconds(), [float(a.latency_ms) for a in done]
        )
        baseline, baseline_cpu = run_baseline(rx.url, count, CONCURRENCY, endpoint.secret)
    ratio = flint.throughput / baseline.throughput if baseline.throughput else 0.0
    postgres = database == "postgresql"
    return Row(
        scenario="webhook delivery, 1 worker",
        database=database,
        concurrency=CONCURRENCY,
        flint=flint,
        baseline=baseline,
        baseline_name="raw signed POSTs (aiohttp)",
        target=f">= {THROUGHPUT_TARGET:.2f}x and >= {THROUGHPUT_FLOOR:,.0f}/s" if postgres else "",
        met=(ratio >= THROUGHPUT_TARGET and flint.throughput >= THROUGHPUT_FLOOR)
        if postgres
        else None,
        notes={
            "deliveries": str(count),
            # CPU per operation does not depend on how busy the machine is.
            "cpu ms/delivery": f"{1000 * cpu / count:.2f}",
            "baseline cpu ms/POST": f"{1000 * baseline_cpu / count:.2f}",
        },
    )


def commit_to_receiver(stack: FlintStack, rx: Receiver, samples: int) -> tuple[list[float], float]:
    """Creates `samples` orders over gRPC, one at a time, each once the last
    one's webhook arrived (and a short gap); returns each event's latency from
    its commit (`created_at`) to its arrival at `rx`, in ms, and the seconds
    the run took."""
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = orders_grpc.OrdersServiceStub(channel)
        auth = (("authorization", f"Bearer {stack.merchant_key}"),)
        order = commerce_pb.Order(
            line_items=[commerce_pb.LineItem(name="T-shirt", quantity=1, unit_amount=1500)],
            currency="usd",
        )
        started = time.monotonic()
        order_ids: list[str] = []
        before = len(rx.arrivals())
        for _ in range(samples):
            created = stub.CreateOrder(orders_pb.CreateOrderRequest(order=order), metadata=auth)
            order_ids.append(created.id)
            wanted = before + len(order_ids)
            wait_for(lambda: len(rx.arrivals()) >= wanted, timeout=30, interval=0.005)  # noqa: B023
            time.sleep(LATENCY_GAP_SECONDS)
        seconds = time.monotonic() - started
    with stack_db(stack).read() as session:
        created_at = {
            event_id: at.timestamp()
            for event_id, at in session.execute(
                select(EventRecord.id, EventRecord.created_at).where(
                    EventRecord.object_id.in_(order_ids), EventRecord.type == "order.created"
                )
            )
        }
    arrivals = rx.arrivals()
    return [(arrivals[e] - at) * 1000 for e, at in created_at.items() if e in arrivals], seconds


def latency(database: DatabaseKind, samples: int) -> Row:
    log = Path(tempfile.mkdtemp(prefix="flint-bench-rx-")) / "arrivals.log"
    with FlintStack(database=database, worker=True) as stack, receiver(log) as rx:
        create_endpoint(stack, rx.url)
        wait_for(lambda: "webhook worker running" in stack.log("worker"), timeout=30)
        latencies, seconds = commit_to_receiver(stack, rx, samples)
    result = measurement(len(latencies), seconds, latencies, errors=samples - len(latencies))
    postgres = database == "postgresql"
    return Row(
        scenario="commit -> receiver latency, idle",
        database=database,
        concurrency=1,
        flint=result,
        target=f"p50 <= {LATENCY_P50_MS:.0f} ms, p99 <= {LATENCY_P99_MS:.0f} ms"
        if postgres
        else "",
        met=(
            result.p50_ms <= LATENCY_P50_MS
            and result.p99_ms <= LATENCY_P99_MS
            and not result.errors
        )
        if postgres
        else None,
        notes={"samples": str(samples)},
    )


def run(quick: bool) -> list[Row]:
    count = 300 if quick else 5000
    samples = 20 if quick else 200
    rows: list[Row] = []
    for database in DATABASES:
        rows.append(throughput(database, count))
        rows.append(latency(database, samples))
    return rows


if __name__ == "__main__":
    import sys

    from bench.harness import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
