"""Webhook fairness: one endpoint that hangs past the sender's timeout, with a
backlog of deliveries, beside a healthy endpoint. The healthy endpoint's
commit → receiver latency must stay within twice its idle latency, measured in
the same run on the same stack (one `flint worker`, 16 slots, defaults).

Idle: with only the healthy endpoint, one order at a time is created over gRPC
and its webhook's arrival timed (as in the delivery scenario). Then a hanging
endpoint is added and BACKLOG orders are committed, which both endpoints
receive; once the healthy endpoint has all of its copies, the same latency is
measured again while the hanging endpoint's backlog is still pending.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import func, select

from bench.harness import Row
from bench.scenarios._support import create_endpoint, measurement, receiver, stack_db, wait_for
from bench.scenarios.delivery import commit_to_receiver, preload_orders
from bench.stack import DatabaseKind, FlintStack
from flint.webhooks.models import WebhookDeliveryRecord

DATABASES: tuple[DatabaseKind, ...] = ("postgresql", "sqlite")
BACKLOG = 1000
# The healthy endpoint's p99 beside the hanging one, at most this times its idle p99.
P99_RATIO_TARGET = 2.0


def _pending(stack: FlintStack, endpoint_id: str) -> int:
    with stack_db(stack).read() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    WebhookDeliveryRecord.endpoint_id == endpoint_id,
                    WebhookDeliveryRecord.status == "pending",
                )
            )
            or 0
        )


def fairness(database: DatabaseKind, samples: int, backlog: int = BACKLOG) -> Row:
    logs = Path(tempfile.mkdtemp(prefix="flint-bench-fair-"))
    with (
        FlintStack(database=database, worker=True) as stack,
        receiver(logs / "healthy.log") as healthy,
        receiver(logs / "hanging.log", hang=True) as hanging,
    ):
        create_endpoint(stack, healthy.url)
        wait_for(lambda: "webhook worker running" in stack.log("worker"), timeout=30)
        idle_ms, idle_seconds = commit_to_receiver(stack, healthy, samples)

        stuck = create_endpoint(stack, hanging.url)
        preload_orders(stack, backlog)
        wait_for(lambda: len(healthy.arrivals()) >= samples + backlog, timeout=300)
        busy_ms, busy_seconds = commit_to_receiver(stack, healthy, samples)
        # The hanging endpoint still had (nearly) all of its backlog meanwhile.
        still_pending = _pending(stack, stuck.id)
        hung_requests = len(hanging.arrivals())
    idle = measurement(len(idle_ms), idle_seconds, idle_ms, errors=samples - len(idle_ms))
    busy = measurement(len(busy_ms), busy_seconds, busy_ms, errors=samples - len(busy_ms))
    ratio = busy.p99_ms / idle.p99_ms if idle.p99_ms else float("inf")
    postgres = database == "postgresql"
    return Row(
        scenario="commit -> receiver, beside a hanging endpoint",
        database=database,
        concurrency=1,
        flint=busy,
        baseline=idle,
        baseline_name="same endpoint, idle",
        target=f"p99 <= {P99_RATIO_TARGET:.0f}x idle p99" if postgres else "",
        met=(ratio <= P99_RATIO_TARGET and not busy.errors and still_pending >= backlog // 2)
        if postgres
        else None,
        notes={
            "samples": str(samples),
            "p99_ratio": f"{ratio:.2f}",
            "hanging backlog": str(backlog),
            "hanging still pending": str(still_pending),
            "hanging requests": str(hung_requests),
        },
    )


def run(quick: bool) -> list[Row]:
    samples = 40 if quick else 200
    return [fairness(database, samples) for database in DATABASES]


if __name__ == "__main__":
    import sys

    from bench.harness import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
