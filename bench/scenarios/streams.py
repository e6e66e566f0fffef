"""Event streams: 1,000 concurrent `StreamEvents` subscribers on one server.

Two subscriber processes (grpc.aio, 500 streams each, spread over several
channels) follow the seeded app's events. Once every stream has seen a warm-up
event, orders are created one at a time; for each event and each subscriber
the latency is the arrival time minus the event's `created_at` (the commit's
timestamp). The server's resident memory is read before and after.

Run as a module it is one subscriber process:

    python -m bench.scenarios.streams subscribe TARGET TOKEN STREAMS OUTFILE
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from sqlalchemy import select

from bench.harness import Row
from bench.scenarios._support import REPO, measurement, percentile, rss_mib, stack_db
from bench.stack import DatabaseKind, FlintStack
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import resources_pb2 as commerce_pb
from flint.common.events import EventRecord
from flint.events.v1 import events_service_pb2 as events_pb
from flint.events.v1 import events_service_pb2_grpc as events_grpc

DATABASES: tuple[DatabaseKind, ...] = ("postgresql", "sqlite")
PROCESSES = 2
STREAMS_PER_CHANNEL = 50
# Heartbeats as rare as allowed: they are not what is measured.
HEARTBEAT_SECONDS = 60
GAP_SECONDS = 0.5
TARGET_P99_MS = 500.0
CONNECT_TIMEOUT_SECONDS = 180.0
# After the last event, before the subscribers report: a later arrival is a miss.
SETTLE_SECONDS = 3.0


def _create_order(stub: orders_grpc.OrdersServiceStub, key: str) -> str:
    order = commerce_pb.Order(
        line_items=[commerce_pb.LineItem(name="T-shirt", quantity=1, unit_amount=1500)],
        currency="usd",
    )
    created = stub.CreateOrder(
        orders_pb.CreateOrderRequest(order=order),
        metadata=(("authorization", f"Bearer {key}"),),
    )
    return str(created.id)


def subscribers(database: DatabaseKind, total: int, events: int) -> Row:
    out = Path(tempfile.mkdtemp(prefix="flint-bench-streams-"))
    per_process = total // PROCESSES
    results = [out / f"subscriber-{i}.json" for i in range(PROCESSES)]
    with FlintStack(database=database) as stack:
        server_pid = stack.pids["grpc"]
        rss_idle = rss_mib(server_pid)
        children = [
            subprocess.Popen(  # noqa: S603 - our own command line
                [
                    sys.executable,
                    "-m",
                    "bench.scenarios.streams",
                    "subscribe",
                    stack.grpc_target,
                    stack.app_token,
                    str(per_process),
                    str(result),
                ],
                cwd=REPO,
                stdin=subprocess.PIPE,
            )
            for result in results
        ]
        try:
            with grpc.insecure_channel(stack.grpc_target) as channel:
                stub = orders_grpc.OrdersServiceStub(channel)
                # Streams start at "now": warm-up events until every stream has
                # seen one, so each is subscribed before the measured ones.
                deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
                while not all(_warm(result).exists() for result in results):
                    if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                        raise RuntimeError("the subscribers did not all get the warm-up events")
                    _create_order(stub, stack.merchant_key)
                    time.sleep(1)
                rss_connected = rss_mib(server_pid)
                order_ids: list[str] = []
                started = time.monotonic()
                for _ in range(events):
                    order_ids.append(_create_order(stub, stack.merchant_key))
                    time.sleep(GAP_SECONDS)
                seconds = time.monotonic() - started
            time.sleep(SETTLE_SECONDS)
            rss_after = rss_mib(server_pid)
            for child in children:
                if child.stdin is not None:
                    child.stdin.close()  # tells it to write what it saw and stop
                child.wait(120)
            with stack_db(stack).read() as session:
                created = {
                    event_id: at.timestamp()
                    for event_id, at in session.execute(
                        select(EventRecord.id, EventRecord.created_at).where(
                            EventRecord.object_id.in_(order_ids),
                            EventRecord.type == "order.created",
                        )
                    )
                }
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
    latencies: list[float] = []
    last_arrival: dict[str, float] = {}
    received = 0
    for result in results:
        streams: list[dict[str, float]] = json.loads(result.read_text())
        for arrivals in streams:
            for event_id, at in arrivals.items():
                if event_id in created:
                    received += 1
                    latencies.append((at - created[event_id]) * 1000)
                    last_arrival[event_id] = max(last_arrival.get(event_id, 0.0), at)
    wanted = events * per_process * PROCESSES
    measured = measurement(received, seconds, latencies, errors=wanted - received)
    slowest = [(at - created[e]) * 1000 for e, at in last_arrival.items()]
    postgres = database == "postgresql"
    return Row(
        scenario=f"event stream, {per_process * PROCESSES} subscribers",
        database=database,
        concurrency=per_process * PROCESSES,
        flint=measured,
        target=f"p99 <= {TARGET_P99_MS:.0f} ms" if postgres else "",
        met=(measured.p99_ms <= TARGET_P99_MS and not measured.errors) if postgres else None,
        notes={
            "events": str(events),
            "last subscriber p99 ms": f"{percentile(slowest, 99):.0f}",
            "server RSS MiB idle/connected/after": (
                f"{rss_idle:.0f}/{rss_connected:.0f}/{rss_after:.0f}"
            ),
        },
    )


def _warm(result: Path) -> Path:
    return result.with_suffix(".warm")


def run(quick: bool) -> list[Row]:
    total = 200 if quick else 1000
    events = 5 if quick else 30
    return [subscribers(database, total, events) for database in DATABASES]


# --- the subscriber process -------------------------------------------------------------


async def _subscribe(target: str, token: str, streams: int, outfile: str) -> None:
    """Follows `streams` streams until stdin closes, then writes each stream's
    arrivals ({event id: time}) to `outfile`."""
    arrivals: list[dict[str, float]] = [{} for _ in range(streams)]
    channels = [
        grpc.aio.insecure_channel(target) for _ in range(-(-streams // STREAMS_PER_CHANNEL))
    ]
    request = events_pb.StreamEventsRequest(heartbeat_seconds=HEARTBEAT_SECONDS)
    metadata = (("authorization", f"Bearer {token}"),)
    calls = [
        events_grpc.EventsServiceStub(channels[i // STREAMS_PER_CHANNEL]).StreamEvents(
            request, metadata=metadata
        )
        for i in range(streams)
    ]
    warm = 0

    async def follow(i: int) -> None:
        nonlocal warm
        seen = arrivals[i]
        async for response in calls[i]:
            if not response.HasField("event"):
                continue
            seen[response.event.id] = time.time()
            if len(seen) == 1:
                warm += 1
                if warm == streams:
                    _warm(Path(outfile)).touch()

    followers = [asyncio.create_task(follow(i)) for i in range(streams)]
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes it
    for call in calls:
        call.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    for channel in channels:
        await channel.close(None)
    Path(outfile).write_text(json.dumps(arrivals))


if __name__ == "__main__":
    if sys.argv[1:2] == ["subscribe"]:
        target, token, streams, outfile = sys.argv[2:6]
        asyncio.run(_subscribe(target, token, int(streams), outfile))
    else:
        from bench.harness import format_table

        print(format_table(run(quick="--quick" in sys.argv)))
