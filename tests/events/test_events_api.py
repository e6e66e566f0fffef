"""The event log: gap-free cursors, list and get with visibility, the live
stream over gRPC and as Server-Sent Events through Envoy."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest

from flint.events.v1 import events_service_pb2 as pb
from flint.events.v1 import events_service_pb2_grpc as pb_grpc
from tests.commerce.support import Commerce
from tests.conftest import bearer
from tests.errors import grpc_error, rest_error
from tests.installs.oauth_support import OAuthWorld, internal_key, make_world


@pytest.fixture
def world(channel, db, new_partner, new_merchant) -> OAuthWorld:
    return make_world(channel, db, new_partner, new_merchant)


@pytest.fixture
def events(channel) -> pb_grpc.EventsServiceStub:
    return pb_grpc.EventsServiceStub(channel)


def wait_for_events(stub, key: str, count: int, *, types=(), timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        listed = stub.ListEvents(
            pb.ListEventsRequest(page_size=100, types=list(types)), metadata=bearer(key)
        )
        if len(listed.events) >= count or time.monotonic() > deadline:
            return listed
        time.sleep(0.05)


def test_merchant_lists_its_events_in_cursor_order(world: OAuthWorld, events, db):
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    order = shop.paid_order()
    listed = wait_for_events(events, world.merchant.test_key, 5)
    types = [e.type for e in listed.events]
    assert types[:2] == ["order.created", "checkout.session.created"]
    assert {"payment.succeeded", "order.paid", "checkout.session.completed"} <= set(types)
    positions = [int(e.cursor.split(".")[0]) for e in listed.events]
    assert positions == sorted(positions)
    paid = next(e for e in listed.events if e.type == "order.paid")
    assert paid.data["object"]["id"] == order.id
    assert paid.data["object"]["status"] == "ORDER_STATUS_PAID"
    assert paid.object_version == 2
    got = events.GetEvent(pb.GetEventRequest(id=paid.id), metadata=bearer(world.merchant.test_key))
    assert got == paid


def test_list_resumes_after_a_cursor(world: OAuthWorld, events, db):
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    shop.create_order()
    first = wait_for_events(events, world.merchant.test_key, 1)
    shop.create_order()
    wait_for_events(events, world.merchant.test_key, 2)
    after = events.ListEvents(
        pb.ListEventsRequest(after=first.events[0].cursor), metadata=bearer(world.merchant.test_key)
    )
    assert [e.type for e in after.events] == ["order.created"]
    assert after.events[0].id != first.events[0].id


def test_app_sees_only_what_its_scopes_allow(world: OAuthWorld, events, db):
    token = world.install(scope="orders:read events:read").access_token
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    order = shop.paid_order()
    shop.refund(order.id, 100)
    merchant_view = wait_for_events(events, world.merchant.test_key, 9)
    assert "refund.created" in [e.type for e in merchant_view.events]
    app_view = events.ListEvents(pb.ListEventsRequest(page_size=100), metadata=bearer(token))
    app_types = {e.type for e in app_view.events}
    assert "order.paid" in app_types
    assert "install.created" in app_types
    assert not any(t.startswith("refund.") for t in app_types)


def test_events_need_the_events_read_scope(world: OAuthWorld, events):
    token = world.install(scope="orders:read").access_token
    with pytest.raises(grpc.RpcError) as caught:
        events.ListEvents(pb.ListEventsRequest(), metadata=bearer(token))
    assert grpc_error(caught.value).reason == "SCOPE_MISSING"


@pytest.mark.parametrize("cursor", ["12.abc", "nonsense", "99999999.AAAAAAAAAAAA"])
def test_forged_cursor_is_refused(world: OAuthWorld, events, cursor):
    with pytest.raises(grpc.RpcError) as caught:
        events.ListEvents(
            pb.ListEventsRequest(after=cursor), metadata=bearer(world.merchant.test_key)
        )
    details = grpc_error(caught.value)
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "CURSOR_INVALID")


def test_a_negative_heartbeat_is_refused(world: OAuthWorld, events):
    stream = events.StreamEvents(
        pb.StreamEventsRequest(heartbeat_seconds=-5), metadata=bearer(world.merchant.test_key)
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(stream))
    details = grpc_error(caught.value)
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "OUT_OF_RANGE",
        ["heartbeat_seconds"],
    )


def test_another_readers_cursor_is_refused(world: OAuthWorld, events, db):
    Commerce(world.channel, world.merchant.test_key, internal_key(db)).create_order()
    mine = wait_for_events(events, world.merchant.test_key, 1)
    with pytest.raises(grpc.RpcError) as caught:
        events.ListEvents(
            pb.ListEventsRequest(after=mine.events[0].cursor),
            metadata=bearer(world.merchant.live_key),
        )
    assert grpc_error(caught.value).reason == "CURSOR_INVALID"


def test_cursors_are_gap_free_under_concurrent_writers(world: OAuthWorld, events, db):
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    start = threading.Barrier(8)

    def write() -> None:
        start.wait()
        for _ in range(5):
            shop.create_order()

    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        after = ""
        while not stop.is_set():
            page = events.ListEvents(
                pb.ListEventsRequest(after=after, page_size=100),
                metadata=bearer(world.merchant.test_key),
            )
            for event in page.events:
                seen.append(int(event.cursor.split(".")[0]))
            after = page.next_cursor or after
            time.sleep(0.01)

    reader = threading.Thread(target=read)
    reader.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: write(), range(8)))
    deadline = time.monotonic() + 10
    while len(seen) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    reader.join()
    # Every event seen exactly once, in order: a reader following the cursor
    # never skipped an event that committed later with a smaller number.
    assert len(seen) == 40
    assert seen == sorted(seen)
    assert len(set(seen)) == 40


def test_stream_backfills_then_follows_live_with_heartbeats(world: OAuthWorld, events, db):
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    shop.create_order()
    first = wait_for_events(events, world.merchant.test_key, 1)
    stream = events.StreamEvents(
        pb.StreamEventsRequest(after="", heartbeat_seconds=1),
        metadata=bearer(world.merchant.test_key),
    )
    received: list[pb.StreamEventsResponse] = []

    def consume() -> None:
        for item in stream:
            received.append(item)
            if sum(1 for r in received if r.HasField("event")) >= 2 and any(
                r.HasField("heartbeat") for r in received
            ):
                return

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.3)
    started = time.monotonic()
    shop.create_order()
    shop.create_order()
    consumer.join(15)
    stream.cancel()
    live = [r.event for r in received if r.HasField("event")]
    assert len(live) >= 2
    assert all(e.type == "order.created" for e in live)
    assert live[0].id != first.events[0].id  # from now: no backfill of the older one
    assert time.monotonic() - started < 10


def test_stream_resumes_from_a_cursor_without_gap_or_duplicate(world: OAuthWorld, events, db):
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    for _ in range(3):
        shop.create_order()
    listed = wait_for_events(events, world.merchant.test_key, 3)
    stream = events.StreamEvents(
        pb.StreamEventsRequest(after=listed.events[0].cursor, heartbeat_seconds=1),
        metadata=bearer(world.merchant.test_key),
    )
    got = []
    for item in stream:
        if item.HasField("event"):
            got.append(item.event.id)
        if len(got) == 2:
            break
    stream.cancel()
    assert got == [e.id for e in listed.events[1:3]]


def test_app_stream_ends_after_its_uninstall(world: OAuthWorld, events):
    tokens = world.install(scope="orders:read events:read")
    stream = events.StreamEvents(
        pb.StreamEventsRequest(heartbeat_seconds=1), metadata=bearer(tokens.access_token)
    )
    seen: list[str] = []

    def consume() -> None:
        for item in stream:
            if item.HasField("event"):
                seen.append(item.event.type)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.5)
    from flint.installs.v1 import installs_service_pb2 as ipb

    world.installs.UninstallInstall(
        ipb.UninstallInstallRequest(id=tokens.install_id), metadata=bearer(world.merchant.test_key)
    )
    consumer.join(10)
    assert not consumer.is_alive(), "the stream did not end"
    assert seen[-1] == "install.uninstalled"


def test_stream_as_server_sent_events_through_envoy(world: OAuthWorld, edge, db):
    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    with (
        httpx.Client(base_url=edge.url, timeout=20) as client,
        client.stream(
            "GET",
            "/v1/events:stream?heartbeat_seconds=1",
            headers={"Authorization": f"Bearer {world.merchant.test_key}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # The headers go out before the server subscribes the stream ("from now"):
        # the first heartbeat says it has, so the order is created after that.
        ordered, deadline = False, time.monotonic() + 15
        for line in response.iter_lines():
            assert time.monotonic() < deadline, "the order's event never came"
            if not line.startswith("data:"):
                continue
            item = json.loads(line.removeprefix("data:"))
            if "heartbeat" in item and not ordered:
                shop.create_order()
                ordered = True
            if "event" in item:
                assert item["event"]["type"] == "order.created"
                assert item["event"]["data"]["object"]["status"] == "ORDER_STATUS_OPEN"
                break


def test_an_event_written_on_one_server_reaches_a_stream_on_another(
    world: OAuthWorld, database_url, tmp_path, db
):
    from tests.conftest import start_grpc_server

    other, port = start_grpc_server(database_url, tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = pb_grpc.EventsServiceStub(channel).StreamEvents(
                pb.StreamEventsRequest(heartbeat_seconds=1),
                metadata=bearer(world.merchant.test_key),
            )
            first = next(iter(stream), None)  # a heartbeat, once subscribed
            del first
            Commerce(world.channel, world.merchant.test_key, internal_key(db)).create_order()
            written = time.monotonic()
            for item in stream:
                if item.HasField("event"):
                    assert item.event.type == "order.created"
                    break
            assert time.monotonic() - written < 1.0
            stream.cancel()
    finally:
        other.stop()


def first_heartbeat(events, key: str, after: str = "") -> str:  # type: ignore[no-untyped-def]
    """The cursor of a new stream's first heartbeat (sent once it is subscribed)."""
    stream = events.StreamEvents(
        pb.StreamEventsRequest(after=after, heartbeat_seconds=1), metadata=bearer(key)
    )
    try:
        for item in stream:
            if item.HasField("heartbeat"):
                return str(item.heartbeat.cursor)
        raise AssertionError("the stream ended without a heartbeat")
    finally:
        stream.cancel()


def test_a_heartbeat_carries_the_readers_own_position_not_the_platforms(
    world: OAuthWorld, events, db, accounts_stub, admin_key
):
    from tests.conftest import create_merchant

    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    shop.create_order()
    own = wait_for_events(events, world.merchant.test_key, 1).events[-1].cursor
    assert first_heartbeat(events, world.merchant.test_key) == own
    # Another tenant's events: the platform's cursor moves, this reader's does not.
    other = create_merchant(accounts_stub, admin_key, "Other Shop")
    rival = Commerce(world.channel, other.test_key, internal_key(db))
    for _ in range(3):
        rival.create_order()
    assert len(wait_for_events(events, other.test_key, 3).events) == 3
    assert first_heartbeat(events, world.merchant.test_key) == own


def test_a_reader_without_events_heartbeats_position_zero(world: OAuthWorld, events, db):
    # The test environment has events; the live one, a reader of its own, has none.
    Commerce(world.channel, world.merchant.test_key, internal_key(db)).create_order()
    wait_for_events(events, world.merchant.test_key, 1)
    heartbeat = first_heartbeat(events, world.merchant.live_key)
    assert heartbeat.split(".")[0] == "0"


def test_resuming_from_a_heartbeat_misses_no_event(
    world: OAuthWorld, events, db, accounts_stub, admin_key
):
    from tests.conftest import create_merchant

    shop = Commerce(world.channel, world.merchant.test_key, internal_key(db))
    shop.create_order()
    wait_for_events(events, world.merchant.test_key, 1)
    heartbeat = first_heartbeat(events, world.merchant.test_key)
    other = create_merchant(accounts_stub, admin_key, "Other Shop")
    Commerce(world.channel, other.test_key, internal_key(db)).create_order()
    order = shop.create_order()
    wait_for_events(events, world.merchant.test_key, 2)
    stream = events.StreamEvents(
        pb.StreamEventsRequest(after=heartbeat, heartbeat_seconds=1),
        metadata=bearer(world.merchant.test_key),
    )
    try:
        first = next(item for item in stream if item.HasField("event"))
    finally:
        stream.cancel()
    assert first.event.type == "order.created"
    assert first.event.data["object"]["id"] == order.id


# --- a refused stream is refused before its first byte ------------------------------


def refused_sse(edge, path: str, credential: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    with (
        httpx.Client(base_url=edge.url, timeout=20) as client,
        client.stream("GET", path, headers={"Authorization": f"Bearer {credential}"}) as response,
    ):
        response.read()  # the whole answer: an error, not an open stream
        return response


def test_sse_stream_with_a_bad_token_is_401_json(edge):
    response = refused_sse(edge, "/v1/events:stream", "sk_test_" + "x" * 40)
    assert response.status_code == 401, response.text
    assert rest_error(response).reason.startswith("CREDENTIAL_")
    assert response.headers["x-request-id"]


def test_sse_stream_without_the_events_scope_is_403_json(world: OAuthWorld, edge):
    token = world.install(scope="orders:read").access_token
    response = refused_sse(edge, "/v1/events:stream", token)
    assert response.status_code == 403, response.text
    assert rest_error(response).reason == "SCOPE_MISSING"


def test_sse_stream_with_a_forged_cursor_is_400_json(world: OAuthWorld, edge):
    response = refused_sse(edge, "/v1/events:stream?after=12.abc", world.merchant.test_key)
    assert response.status_code == 400, response.text
    details = rest_error(response)
    assert (details.reason, details.fields) == ("CURSOR_INVALID", ["after"])


def test_grpc_stream_refusals_come_before_any_message_or_header(world: OAuthWorld, events):
    token = world.install(scope="orders:read").access_token
    for credential, code, reason in (
        ("sk_test_" + "x" * 40, grpc.StatusCode.UNAUTHENTICATED, None),
        (token, grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING"),
    ):
        stream = events.StreamEvents(pb.StreamEventsRequest(), metadata=bearer(credential))
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(stream))
        assert caught.value.code() == code
        if reason:
            assert grpc_error(caught.value).reason == reason
        # No headers went out ahead of the refusal; the request id came with the status.
        assert not stream.initial_metadata()
        assert dict(stream.trailing_metadata())["x-request-id"]


def test_a_stream_announces_itself_with_a_heartbeat_and_the_request_id(world: OAuthWorld, events):
    # Default heartbeat interval (15 s): the first heartbeat does not wait for it.
    stream = events.StreamEvents(
        pb.StreamEventsRequest(),
        metadata=(*bearer(world.merchant.test_key), ("x-request-id", "req-announce")),
        timeout=10,
    )
    try:
        first = next(iter(stream))
        assert first.HasField("heartbeat")
        assert dict(stream.initial_metadata())["x-request-id"] == "req-announce"
    finally:
        stream.cancel()
