"""Faults the event spine survives: a rolled-back change leaves no event and no
delivery; a stream that loses its server or database resumes from its cursor
with no gap and no duplicate."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from flint.commerce import orders
from flint.commerce.context import Actor, Tenant
from flint.commerce.lines import LineInput
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.events.sequencer import sequence_pending
from flint.events.v1 import events_service_pb2 as pb
from flint.events.v1 import events_service_pb2_grpc as pb_grpc
from flint.webhooks.fanout import fan_out
from flint.webhooks.models import WebhookDeliveryRecord
from tests.commerce.support import Commerce
from tests.conftest import MerchantCreds, bearer, start_grpc_server
from tests.installs.oauth_support import internal_key


def _order_then_fail(db: Database, merchant_id: str, written: list[str]) -> None:
    with db.unit_of_work() as uow:
        order = orders.create_order(
            uow,
            Tenant(merchant_id, "test"),
            Actor("merchant", merchant_id),
            lines=[LineInput("Mug", 1, 1000)],
            currency="usd",
            customer_email="",
            metadata={},
        )
        uow.session.flush()  # the event row exists inside the transaction…
        written += uow.session.scalars(
            select(EventRecord.id).where(EventRecord.object_id == order.id)
        ).all()
        raise RuntimeError("the change fails before commit")


def test_a_rolled_back_change_leaves_no_event_and_no_delivery(db: Database, new_merchant):
    written: list[str] = []
    with pytest.raises(RuntimeError):
        _order_then_fail(db, new_merchant.id, written)
    assert len(written) == 1
    sequence_pending(db, [fan_out])
    with db.read() as session:
        # …and is gone with it: nothing to number, nothing to deliver.
        assert session.get(EventRecord, written[0]) is None
        deliveries = session.scalar(
            select(func.count())
            .select_from(WebhookDeliveryRecord)
            .where(WebhookDeliveryRecord.event_id == written[0])
        )
    assert deliveries == 0


def _restart_postgresql() -> None:
    version = next(Path("/etc/postgresql").iterdir()).name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _follow(port: int, key: str, after: str, want: int, seen: list[str]) -> str:
    """Reads events after `after` until `want` were seen; returns the last cursor.
    A dropped stream reconnects from the last cursor, as a client should."""
    deadline = time.monotonic() + 60
    while len(seen) < want and time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream = pb_grpc.EventsServiceStub(channel).StreamEvents(
                    pb.StreamEventsRequest(after=after, heartbeat_seconds=1),
                    metadata=bearer(key),
                    timeout=30,
                )
                for item in stream:
                    if item.HasField("event"):
                        seen.append(item.event.id)
                        after = item.event.cursor
                    if len(seen) >= want:
                        stream.cancel()
                        break
        except grpc.RpcError:
            time.sleep(0.5)  # the server or its database is away: try again
    return after


def test_a_stream_resumes_after_the_database_or_server_restarts(
    db: Database, database_url: str, tmp_path: Path, channel, new_merchant: MerchantCreds
):
    shop = Commerce(channel, new_merchant.test_key, internal_key(db))
    server, port = start_grpc_server(database_url, tmp_path)
    try:
        events = pb_grpc.EventsServiceStub(channel)
        created = [shop.create_order().id for _ in range(2)]
        key = new_merchant.test_key
        first = events.ListEvents(pb.ListEventsRequest(), metadata=bearer(key))
        while len(first.events) < 2:
            time.sleep(0.05)
            first = events.ListEvents(pb.ListEventsRequest(), metadata=bearer(key))
        # Follow from the first event's cursor: the stream backfills the second.
        seen = [first.events[0].id]
        cursor = _follow(port, key, first.events[0].cursor, 2, seen)
        assert seen == [e.id for e in first.events]
        if db.is_sqlite:
            # SQLite has no server to restart: restart the gRPC server instead.
            server.stop()
            server, port = start_grpc_server(database_url, tmp_path)
        else:
            _restart_postgresql()
        for _ in range(3):
            for attempt in range(50):
                try:
                    created.append(shop.create_order().id)
                    break
                except grpc.RpcError:
                    time.sleep(0.2 * (attempt + 1))
        _follow(port, new_merchant.test_key, cursor, 5, seen)
        # Every order's event exactly once, in order: no gap, no duplicate.
        objects = [
            events.GetEvent(
                pb.GetEventRequest(id=event_id), metadata=bearer(new_merchant.test_key)
            ).object_id
            for event_id in seen
        ]
        assert objects == created
    finally:
        server.stop()
