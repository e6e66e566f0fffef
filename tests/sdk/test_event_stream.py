"""The event-stream iterator against Flint's real SSE stream through Envoy:
live events, and resuming after the connection is cut with no gap and no
duplicate."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from flint.sdk import FlintClient
from flint.sdk.event_stream import sse_data
from tests.sdk.conftest import Seed, order_body
from tests.sdk.proxy import ChaosProxy

pytestmark = pytest.mark.e2e


def test_sse_data_joins_multi_line_payloads_and_skips_comments():
    lines = iter([": hello", 'data: {"a":', "data: 1}", "", "data: {}", ""])
    assert list(sse_data(lines)) == ['{"a":\n1}', "{}"]


def scripted_stream(*items: dict[str, object], api_key: str = "sk_test_x") -> FlintClient:
    """A client whose event stream sends `items`, then nothing but heartbeats."""
    body = "".join(f"data: {json.dumps(item)}\n\n" for item in items)
    answers = [body]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/events:stream"
        text = answers.pop(0) if answers else 'data: {"heartbeat": {"cursor": "9.z"}}\n\n'
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    return FlintClient(
        api_key=api_key,
        base_url="http://flint.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


UNINSTALLED = {
    "id": "evt_1",
    "type": "install.uninstalled",
    "cursor": "2.a",
    "object_type": "install",
    "object_id": "ins_1",
}


def test_an_app_stream_ends_after_its_install_is_uninstalled():
    client = scripted_stream(
        {"heartbeat": {"cursor": "1.x"}}, {"event": UNINSTALLED}, api_key="eyJ.app.token"
    )
    with client.events.stream(heartbeat_seconds=1) as stream:
        assert [event.id for event in stream] == ["evt_1"]


def test_a_merchant_stream_goes_on_after_an_app_is_uninstalled():
    created = {
        "id": "evt_2",
        "type": "order.created",
        "cursor": "3.b",
        "object_type": "order",
        "object_id": "ord_1",
    }
    client = scripted_stream(
        {"heartbeat": {"cursor": "1.x"}}, {"event": UNINSTALLED}, {"event": created}
    )
    with client.events.stream(heartbeat_seconds=1) as stream:
        assert next(stream).id == "evt_1"
        # The merchant sees every app's install events; only an app's own
        # install ends its (the app's) stream.
        assert next(stream).id == "evt_2"
    assert stream.cursor == "3.b"


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
