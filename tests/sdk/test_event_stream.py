"""The event-stream iterator against Flint's real SSE stream through Envoy:
live events, and resuming after the connection is cut with no gap and no
duplicate."""

from __future__ import annotations

import threading
import time

import pytest

from flint.sdk import FlintClient
from flint.sdk.event_stream import sse_data
from tests.sdk.conftest import Seed, order_body
from tests.sdk.proxy import ChaosProxy

pytestmark = pytest.mark.e2e


def test_sse_data_joins_multi_line_payloads_and_skips_comments():
    lines = iter([": hello", 'data: {"a":', "data: 1}", "", "data: {}", ""])
    assert list(sse_data(lines)) == ['{"a":\n1}', "{}"]


def test_stream_yields_live_events_as_typed_messages(merchant: FlintClient):
    with merchant.events.stream(heartbeat_seconds=1) as stream:
        order = merchant.orders.create(order_body())
        event = next(stream)
    assert event.type == "order.created"
    assert event.object_id == order.id
    assert event.data["object"]["status"] == "ORDER_STATUS_OPEN"
    assert stream.cursor == event.cursor


def test_stream_resumes_after_a_cut_connection_without_gap_or_duplicate(
    seed: Seed, merchant: FlintClient, flint_up: int
):
    received: list[str] = []
    with (
        ChaosProxy(flint_up) as proxy,
        FlintClient(api_key=seed.test_key, base_url=proxy.url) as through_proxy,
        through_proxy.events.stream(heartbeat_seconds=1) as stream,
    ):
        done = threading.Event()

        def consume() -> None:
            for event in stream:
                received.append(event.object_id)
                if len(received) == 6:
                    break
            done.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        # Wait until the stream is connected (it has a cursor from its first heartbeat).
        deadline = time.monotonic() + 10
        while not stream.cursor:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ids = [merchant.orders.create(order_body(100 + n)).id for n in range(2)]
        while len(received) < 2:
            assert time.monotonic() < deadline, received
            time.sleep(0.05)

        # Cut the connection and keep it down while four more orders are created.
        proxy.refusing = True
        proxy.cut_all()
        ids += [merchant.orders.create(order_body(200 + n)).id for n in range(4)]
        time.sleep(1.0)
        proxy.refusing = False

        assert done.wait(20), received
    assert received == ids
    assert stream.reconnects >= 1
