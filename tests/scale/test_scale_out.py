"""Scale-out: `flint up --replicas 3 --workers 2` on one database. Writes through
every replica (directly and through Envoy) are all visible and evented exactly
once; a stream on one replica sees what another wrote within a second; the two
workers share the deliveries and never send one twice. PostgreSQL is the real
target; SQLite runs the same test on one machine."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import httpx
import pytest
from sqlalchemy import func, select

from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.common import rate_limit_overrides as overrides
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.events.v1 import events_service_pb2 as events_pb
from flint.events.v1 import events_service_pb2_grpc as events_grpc
from flint.webhooks.models import WebhookDeliveryRecord
from tests.commerce.support import Commerce
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.installs.oauth_support import make_world
from tests.scale.stack import Stack, running_stack
from tests.webhooks.conftest import Hooks
from tests.webhooks.support import attempts, deliveries, eventually, receiver

REPLICAS = 3
WORKERS = 2
STREAM_DEADLINE_SECONDS = 1.0

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        database_url, tmp_path_factory.mktemp("scale"), replicas=REPLICAS, workers=WORKERS
    ) as running:
        yield running


def _channels(stack: Stack) -> list[grpc.Channel]:
    return [grpc.insecure_channel(f"127.0.0.1:{port}") for port in stack.grpc_ports]


def order_created_counts(db: Database, order_ids: list[str]) -> Counter[str]:
    """How many order.created events each order has, once all are sequenced."""

    def sequenced() -> Counter[str] | None:
        with db.read() as session:
            rows = session.execute(
                select(EventRecord.object_id, EventRecord.cursor).where(
                    EventRecord.type == "order.created", EventRecord.object_id.in_(order_ids)
                )
            ).all()
        if any(cursor is None for _, cursor in rows):
            return None
        return Counter(object_id for object_id, _ in rows)

    counts: Counter[str] = eventually(sequenced)
    return counts


def test_writes_through_every_replica_are_visible_and_evented_once(
    stack: Stack, db: Database, new_merchant: MerchantCreds
):
    created: list[str] = []
    channels = _channels(stack)
    try:
        for channel in channels:
            shop = Commerce(channel, new_merchant.test_key, "")
            created += [shop.create_order().id for _ in range(4)]
        before = stack.requests_per_replica()
        with httpx.Client(base_url=stack.url, timeout=10) as rest:
            for n in range(9):
                response = rest.post(
                    "/v1/orders",
                    json={
                        "currency": "usd",
                        "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": 900}],
                    },
                    headers={
                        "Authorization": f"Bearer {new_merchant.test_key}",
                        "Idempotency-Key": f"scale-{new_merchant.id}-{n}",
                    },
                )
                assert response.status_code == 200, response.text
                created.append(response.json()["id"])
        after = stack.requests_per_replica()
        # Envoy spread the REST writes over every replica (round robin).
        assert sorted(after) == sorted(stack.grpc_ports)
        assert all(after[port] > before.get(port, 0) for port in stack.grpc_ports), after

        # Every replica sees every order…
        for channel in channels:
            shop = Commerce(channel, new_merchant.test_key, "")
            listed = shop.orders.ListOrders(
                orders_pb.ListOrdersRequest(page_size=100), metadata=shop.auth
            )
            assert sorted(o.id for o in listed.orders) == sorted(created)
    finally:
        for channel in channels:
            channel.close()
    # …and each has exactly one order.created event.
    counts = order_created_counts(db, created)
    assert counts == Counter({order_id: 1 for order_id in created})


@contextmanager
def following(port: int, key: str) -> Iterator[queue.Queue[tuple[str, float]]]:
    """A stream of new events on one replica, open (first heartbeat seen) when
    this yields; each order.created arrives as (object id, monotonic time)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stream = events_grpc.EventsServiceStub(channel).StreamEvents(
        events_pb.StreamEventsRequest(heartbeat_seconds=1), metadata=bearer(key), timeout=60
    )
    ready = threading.Event()
    seen: queue.Queue[tuple[str, float]] = queue.Queue()

    def read() -> None:
        try:
            for item in stream:
                if item.HasField("heartbeat"):
                    ready.set()  # the stream is open: what is written now must arrive
                elif item.event.type == "order.created":
                    seen.put((item.event.object_id, time.monotonic()))
        except grpc.RpcError:
            pass  # cancelled on the way out; a real failure shows as a missing event

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(10), "the stream sent no heartbeat"
        yield seen
    finally:
        stream.cancel()
        reader.join(10)
        channel.close()


@pytest.mark.parametrize(("reader", "writer"), [(0, 1), (1, 2), (2, 0)])
def test_a_stream_on_one_replica_sees_writes_through_another_within_a_second(
    stack: Stack, new_merchant: MerchantCreds, reader: int, writer: int
):
    key = new_merchant.test_key
    with (
        following(stack.grpc_ports[reader], key) as seen,
        grpc.insecure_channel(f"127.0.0.1:{stack.grpc_ports[writer]}") as channel,
    ):
        shop = Commerce(channel, key, "")
        for _ in range(3):
            written_at = time.monotonic()
            order = shop.create_order()
            object_id, arrived_at = seen.get(timeout=10)
            assert object_id == order.id
            assert arrived_at - written_at < STREAM_DEADLINE_SECONDS


def all_succeeded(db: Database, endpoint_id: str, count: int) -> list[WebhookDeliveryRecord]:
    """The endpoint's deliveries once there are `count` and all succeeded."""
    found = deliveries(db, endpoint_id)
    done = len(found) == count and all(d.status == "succeeded" for d in found)
    return found if done else []


# A worker's log line for one attempt, tagged with the worker's name by `flint up`.
WORKER_LINE = re.compile(
    r' webhook_attempt process="(?P<worker>worker-\d+)" .*delivery="(?P<id>[^"]+)"'
)


def test_workers_share_deliveries_and_never_send_one_twice(
    stack: Stack, db: Database, new_partner: PartnerCreds, new_merchant: MerchantCreds
):
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_ports[0]}") as channel:
        world = make_world(channel, db, new_partner, new_merchant)
        hooks = Hooks(world, world.install(scope="orders:read events:read").access_token)
        with receiver() as rx:
            # Each request takes a while, so one worker cannot take all the work.
            rx.delay = 0.1
            endpoint = hooks.create_endpoint(rx.url)
            order_ids = []
            for i in range(60):
                port = stack.grpc_ports[i % REPLICAS]
                with grpc.insecure_channel(f"127.0.0.1:{port}") as replica:
                    order_ids.append(Commerce(replica, new_merchant.test_key, "").create_order().id)
            done = eventually(lambda: all_succeeded(db, endpoint.id, 60), timeout=60)
            arrivals = Counter(rx.ids())
    # Every event delivered, each webhook-id arrived once: none sent twice, at
    # the same time or otherwise.
    assert len(done) == 60
    assert sorted(json.loads(r.body)["object_id"] for r in rx.requests) == sorted(order_ids)
    assert set(arrivals.values()) == {1}, arrivals
    for delivery in done:
        [attempt] = attempts(db, delivery.id)
        assert attempt.outcome == "succeeded"
    # Both workers did some of the work. A worker logs an attempt after storing
    # it, so the last lines may trail the rows just read.
    done_ids = {d.id for d in done}

    def logged_by_worker() -> Counter[str] | None:
        lines = WORKER_LINE.finditer(stack.log())
        found = Counter(match["worker"] for match in lines if match["id"] in done_ids)
        return found if sum(found.values()) >= 60 else None

    by_worker = eventually(logged_by_worker, timeout=30)
    assert sorted(by_worker) == ["worker-1", "worker-2"], by_worker
    assert sum(by_worker.values()) == 60
    with db.read() as session:
        events = session.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.type == "order.created", EventRecord.object_id.in_(order_ids))
        )
    assert events == 60


def test_each_child_logs_under_its_name(stack: Stack):
    log = stack.log()
    for name in ("grpc-1", "grpc-2", "grpc-3"):
        assert f'process="{name}"' in log


def test_a_rate_limit_holds_across_replicas_not_once_per_replica(
    stack: Stack, db: Database, new_merchant: MerchantCreds
):
    # `flint up` with several replicas starts a private Redis for their buckets.
    assert any("redis-server" in child.cmdline for child in stack.up.children)
    with db.unit_of_work() as uow:
        subject = overrides.merchant_subject(new_merchant.id, "test")
        overrides.set_override(uow.session, subject, reads=2, writes=2, now=uow.now)
        uow.commit()
    channels = _channels(stack)
    allowed = 0
    refusals: set[grpc.StatusCode] = set()
    try:
        started = time.monotonic()
        for _ in range(4):
            for channel in channels:
                stub = orders_grpc.OrdersServiceStub(channel)
                try:
                    stub.ListOrders(
                        orders_pb.ListOrdersRequest(), metadata=bearer(new_merchant.test_key)
                    )
                    allowed += 1
                except grpc.RpcError as error:
                    refusals.add(error.code())
        elapsed = time.monotonic() - started
    finally:
        for channel in channels:
            channel.close()
    # One bucket (burst 2, 2 a second) for the merchant, whichever replica answers;
    # a bucket per replica would have let at least 2 through on each of the 3.
    assert 2 <= allowed <= 2 + int(2 * elapsed) + 1
    assert refusals == {grpc.StatusCode.RESOURCE_EXHAUSTED}
