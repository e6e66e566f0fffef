"""The database goes away during writes, deliveries and open streams, and comes
back. Writes either commit with their events or fail with a retryable error;
the worker and the stream carry on by themselves; nothing is lost or doubled.

On PostgreSQL the test's own cluster restarts (see private_postgres.py). SQLite
has no server: its equivalent outage is the restart of the processes holding
the file, so the same test restarts the gRPC server and the worker instead."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import select

from flint.commerce.models import OrderRecord
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import resources_pb2 as pb
from flint.common.events import EventRecord
from flint.events.v1 import events_service_pb2 as events_pb
from flint.events.v1 import events_service_pb2_grpc as events_grpc
from tests.commerce.support import Commerce
from tests.conftest import bearer, free_port
from tests.faults.conftest import Outage, Process, new_tenants, start_server, start_worker
from tests.installs.oauth_support import make_world
from tests.webhooks.conftest import Hooks
from tests.webhooks.support import Received, eventually, receiver

ORDERS = 30
RESTART_AFTER = 8
# Writes go on while the database restarts (however fast they are), up to this many.
ORDERS_AT_MOST = 1000
# What a client may see while the database is away: retry and it goes through.
# CANCELLED: a call in flight when the server process stops (the SQLite variant
# restarts it) is cancelled by the server; under its Idempotency-Key a retry is safe.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}


@dataclass
class Follower:
    """A stream client that reconnects from its last cursor when the stream
    breaks, as the SDK does."""

    port: int
    key: str
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (type, object, event)
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    reconnects: int = 0
    after: str = ""

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
                    stream = events_grpc.EventsServiceStub(channel).StreamEvents(
                        events_pb.StreamEventsRequest(after=self.after, heartbeat_seconds=1),
                        metadata=bearer(self.key),
                        timeout=120,
                    )
                    for item in stream:
                        self.ready.set()
                        if item.HasField("heartbeat"):
                            self.after = self.after or item.heartbeat.cursor
                        else:
                            event = item.event
                            self.seen.append((event.type, event.object_id, event.id))
                            self.after = event.cursor
                        if self.stop.is_set():
                            stream.cancel()
            except grpc.RpcError:
                if not self.stop.is_set():
                    self.reconnects += 1
                    time.sleep(0.2)


def create_with_retries(shop: Commerce, key: str, errors: Counter[str]) -> str:
    """Creates one order under an Idempotency-Key, retrying retryable errors."""
    deadline = time.monotonic() + 90
    while True:
        try:
            order = shop.orders.CreateOrder(
                _order_request(), metadata=(*shop.auth, ("idempotency-key", key)), timeout=10
            )
            return order.id
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            errors[error.code().name] += 1
            time.sleep(0.2)


def _order_request() -> orders_pb.CreateOrderRequest:
    return orders_pb.CreateOrderRequest(
        order=pb.Order(
            currency="usd", line_items=[pb.LineItem(name="Mug", quantity=1, unit_amount=900)]
        )
    )


def test_database_restart_during_writes_deliveries_and_streams(outage: Outage, tmp_path: Path):
    port = free_port()
    server = start_server(outage.database_url, port, tmp_path)
    worker = start_worker(outage.database_url, tmp_path)
    processes: list[Process] = [server, worker]
    follower: Follower | None = None
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, receiver() as rx:
            rx.delay = 0.05  # deliveries are in flight when the database goes
            partner, merchant = new_tenants(channel, outage.admin_key)
            world = make_world(channel, outage.db, partner, merchant)
            hooks = Hooks(world, world.install(scope="orders:read events:read").access_token)
            hooks.create_endpoint(rx.url)
            follower = Follower(port, merchant.test_key)
            threading.Thread(target=follower.run, daemon=True).start()
            assert follower.ready.wait(30), "the stream never opened"

            shop = Commerce(channel, merchant.test_key, "")
            errors: Counter[str] = Counter()
            created: list[str] = []
            restarting: threading.Thread | None = None
            n = 0
            while n < ORDERS or (restarting is not None and restarting.is_alive()):
                if n == RESTART_AFTER:
                    restarting = threading.Thread(
                        target=_take_the_database_away, args=(outage, processes, port, tmp_path)
                    )
                    restarting.start()
                created.append(create_with_retries(shop, f"restart-{merchant.id}-{n}", errors))
                n += 1
                assert n < ORDERS_AT_MOST, "the database restart never finished"
            assert restarting is not None
            restarting.join(120)

            # The stream carried on: every order's event once, in commit order.
            eventually(lambda: len(_orders_seen(follower)) >= len(created), timeout=60)
            assert _orders_seen(follower) == created
            seen_events = [event_id for _, _, event_id in follower.seen]
            # The worker carried on: every event delivered; a repeat only ever
            # carries the webhook-id of the first send.
            eventually(lambda: _delivered_orders(rx.requests) >= set(created), timeout=90)
            ids_per_event: dict[str, set[str]] = defaultdict(set)
            for request in rx.requests:
                ids_per_event[json.loads(request.body)["id"]].add(request.headers["webhook-id"])
            assert all(len(ids) == 1 for ids in ids_per_event.values()), ids_per_event
    finally:
        if follower is not None:
            follower.stop.set()
        for process in processes:
            process.stop()
    # Nothing half-written: every order the database holds is one the client saw
    # succeed, and each has exactly one order.created event.
    with outage.db.read() as session:
        stored = session.scalars(
            select(OrderRecord.id).where(OrderRecord.merchant_id == merchant.id)
        ).all()
        events = Counter(
            session.scalars(
                select(EventRecord.object_id).where(
                    EventRecord.merchant_id == merchant.id, EventRecord.type == "order.created"
                )
            ).all()
        )
        cursors = {
            event_id: cursor
            for event_id, cursor in session.execute(
                select(EventRecord.id, EventRecord.cursor).where(EventRecord.id.in_(seen_events))
            )
        }
    # The stream followed the cursor order with no gap and no repeat.
    assert [cursors[event_id] for event_id in seen_events] == sorted(set(cursors.values()))
    assert sorted(stored) == sorted(created)
    assert events == Counter(created)
    if outage.postgres is not None:
        assert errors["UNAVAILABLE"] > 0, "no write met the restart"


def _take_the_database_away(outage: Outage, processes: list[Process], port: int, logs: Path):
    time.sleep(0.3)  # let a few more writes start
    if outage.postgres is not None:
        outage.postgres.restart()
        return
    for process in processes:
        process.stop()
    processes[:] = [
        start_server(outage.database_url, port, logs),
        start_worker(outage.database_url, logs),
    ]


def _orders_seen(follower: Follower) -> list[str]:
    return [object_id for type_, object_id, _ in follower.seen if type_ == "order.created"]


def _delivered_orders(requests: list[Received]) -> set[str]:
    bodies = [json.loads(request.body) for request in list(requests)]
    return {body["object_id"] for body in bodies if body["type"] == "order.created"}
