"""`flint listen` end to end: the real gRPC server and Envoy, events made by
real orders, a real HTTP receiver on loopback, and `flint listen` as a real
subprocess. Signatures are checked with the independent `standardwebhooks`
package, using the secret `flint listen` printed."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.installs.v1 import installs_service_pb2 as installs_pb
from flint.webhooks.signing import new_secret
from tests.commerce.support import Commerce
from tests.conftest import (
    MerchantCreds,
    PartnerCreds,
    Process,
    bearer,
    flint_env,
    free_port,
    start_envoy,
)
from tests.installs.oauth_support import make_world
from tests.listen.conftest import Listen, Receiver, listed_events, poll

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d   --> (?P<type>[a-z_.]+) \[(?P<id>evt_\w+)\]"
    r"   <-- \[(?P<answer>\d{3}|ERROR)\] POST (?P<url>\S+)(?: \((?P<error>.+)\))?$"
)


def parsed(lines: list[str]) -> list[re.Match[str]]:
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m]


def test_forwards_each_event_signed_with_one_line_per_event(
    listen: Listen, receiver: Receiver, shop: Commerce, channel: grpc.Channel
) -> None:
    receiver.status = 202  # the line shows what the receiver answered
    listener = listen.start(shop.key, "--forward-to", receiver.url)
    secret = listener.wait_ready()

    shop.paid_order()
    expected = listed_events(channel, shop.key)
    assert len(expected) == 5  # order, session, payment, order.paid, session completed
    poll(lambda: len(receiver.received()) == 5, what="5 deliveries")
    lines = parsed(listener.wait_lines(5))

    assert receiver.ids() == [e.id for e in expected]
    for request, event in zip(receiver.received(), expected, strict=True):
        assert request.path == "/webhooks"
        assert request.headers["content-type"] == "application/json"
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["id"] == event.id
        assert payload["type"] == event.type
        assert payload["data"]["object"]["id"] == event.object_id
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(request.body, request.headers)
    assert [(m["type"], m["id"], m["answer"], m["url"]) for m in lines] == [
        (e.type, e.id, "202", receiver.url) for e in expected
    ]
    assert listener.popen.poll() is None
    assert listener.interrupt() == 0  # Ctrl-C ends it cleanly
    assert shop.key not in listener.output()


def test_print_secret_matches_the_ready_line_and_state_is_private(
    listen: Listen, receiver: Receiver, shop: Commerce
) -> None:
    printed = listen.run(shop.key, "--print-secret")
    assert printed.returncode == 0, printed.stderr
    secret = printed.stdout.strip()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+=*", secret)
    assert listen.run("", "--print-secret").stdout.strip() == secret  # the same, kept

    listener = listen.start(shop.key, "--forward-to", receiver.url)
    assert listener.wait_ready() == secret
    shop.create_order()
    listener.wait_lines(1)
    assert listener.interrupt() == 0

    state = listen.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [path for path in state.rglob("*") if path.is_file()]
    assert {path.relative_to(state).as_posix() for path in files} == {
        "secret",
        f"cursors/{hashlib.sha256(shop.key.encode()).hexdigest()}",
    }
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert shop.key not in path.read_text()


def test_restart_resumes_with_no_gap_and_no_duplicate(
    listen: Listen, receiver: Receiver, shop: Commerce, channel: grpc.Channel
) -> None:
    first = listen.start(shop.key, "--forward-to", receiver.url)
    secret = first.wait_ready()
    shop.create_order()
    first.wait_lines(1)
    assert first.interrupt() == 0
    assert "flint listen: stopped" in first.err

    for _ in range(3):  # while nobody listens
        shop.create_order()
    second = listen.start(shop.key, "--forward-to", receiver.url)
    assert second.wait_ready() == secret
    second.wait_lines(3)
    shop.create_order()  # and one live again
    lines = parsed(second.wait_lines(4))

    expected = [e.id for e in listed_events(channel, shop.key)]
    assert len(expected) == 5
    poll(lambda: len(receiver.received()) >= 5, what="5 deliveries")
    assert receiver.ids() == expected  # each once, in order
    assert [m["id"] for m in parsed(first.event_lines())] == expected[:1]
    assert [m["id"] for m in lines] == expected[1:]
    assert second.interrupt() == 0


def test_from_now_skips_what_happened_while_stopped(
    listen: Listen, receiver: Receiver, shop: Commerce, channel: grpc.Channel
) -> None:
    first = listen.start(shop.key, "--forward-to", receiver.url)
    first.wait_ready()
    shop.create_order()
    first.wait_lines(1)
    assert first.interrupt() == 0
    shop.create_order()  # missed on purpose

    second = listen.start(shop.key, "--forward-to", receiver.url, "--from-now")
    second.wait_ready()
    shop.create_order()
    second.wait_lines(1)
    events = [e.id for e in listed_events(channel, shop.key)]
    # The stream is in cursor order: had the skipped event been sent, it came first.
    assert receiver.ids() == [events[0], events[2]]
    assert second.interrupt() == 0


def test_events_flag_forwards_only_the_listed_types(
    listen: Listen, receiver: Receiver, shop: Commerce, channel: grpc.Channel, edge
) -> None:
    # No --api-url: the address comes from $FLINT_PUBLIC_URL.
    listener = listen.start(
        shop.key,
        "--forward-to",
        receiver.url,
        "--events",
        "order.paid",
        api_url=False,
        FLINT_PUBLIC_URL=edge.url,
    )
    listener.wait_ready()
    shop.paid_order()
    shop.create_order()
    shop.paid_order()
    lines = parsed(listener.wait_lines(2))

    paid = listed_events(channel, shop.key, ("order.paid",))
    assert len(paid) == 2
    assert len(listed_events(channel, shop.key)) == 11
    poll(lambda: len(receiver.received()) >= 2, what="2 deliveries")
    assert receiver.ids() == [e.id for e in paid]
    assert [m["type"] for m in lines] == ["order.paid", "order.paid"]
    assert listener.interrupt() == 0


def test_an_unknown_event_type_is_refused(listen: Listen, receiver: Receiver, shop: Commerce):
    result = listen.run(
        shop.key,
        "--forward-to",
        receiver.url,
        "--api-url",
        listen.edge.url,
        "--events",
        "order.payed",
    )
    assert result.returncode == 2
    assert "unknown event type(s) in --events: order.payed" in result.stderr


def test_a_live_key_is_refused(listen: Listen, receiver: Receiver, new_merchant: MerchantCreds):
    result = listen.run(
        new_merchant.live_key, "--forward-to", receiver.url, "--api-url", listen.edge.url
    )
    assert result.returncode == 2
    assert "refusing a live secret key (sk_live_…)" in result.stderr
    assert "test-mode events only" in result.stderr
    assert new_merchant.live_key not in result.stderr + result.stdout
    assert receiver.received() == []
    assert not listen.state_dir.exists()  # nothing was set up for it


def test_forward_to_is_required(listen: Listen, shop: Commerce):
    result = listen.run(shop.key, "--api-url", listen.edge.url)
    assert result.returncode == 2
    assert "--forward-to URL is required" in result.stderr


def test_a_revoked_key_stops_listen_with_exit_code_1(
    listen: Listen,
    receiver: Receiver,
    shop: Commerce,
    new_merchant: MerchantCreds,
    accounts_stub: accounts_grpc.AccountsServiceStub,
    admin_key: str,
) -> None:
    first = listen.start(shop.key, "--forward-to", receiver.url)
    first.wait_ready()
    assert first.interrupt() == 0
    accounts_stub.RotateMerchantKey(
        accounts_pb.RotateMerchantKeyRequest(
            id=new_merchant.id,
            environment=accounts_pb.ENVIRONMENT_TEST,
            previous_key_ttl_seconds=0,
        ),
        metadata=bearer(admin_key),
    )

    again = listen.start(shop.key, "--forward-to", receiver.url)
    assert again.wait_exit() == 1, again.output()
    message = "\n".join(again.err)
    assert "flint listen: the API key was refused:" in message
    assert "revoked or rotated" in message
    assert "reconnecting" not in message  # refused for good, not retried
    assert not any(line.startswith("Ready!") for line in again.out)


def test_an_unreachable_receiver_shows_the_error_and_listen_keeps_going(
    listen: Listen, shop: Commerce, channel: grpc.Channel
) -> None:
    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}/webhooks"
    listener = listen.start(shop.key, "--forward-to", url)
    listener.wait_ready()
    shop.create_order()
    [failed] = parsed(listener.wait_lines(1))
    assert (failed["answer"], failed["url"], failed["error"]) == (
        "ERROR",
        url,
        "connection refused",
    )

    receiver = Receiver(port)
    try:
        shop.create_order()
        lines = parsed(listener.wait_lines(2))
        assert lines[1]["answer"] == "200"
        events = [e.id for e in listed_events(channel, shop.key)]
        assert [m["id"] for m in lines] == events
        # Not retried: the failed event's position was saved like any other.
        poll(lambda: len(receiver.received()) >= 1, what="a delivery")
        assert receiver.ids() == events[1:]
        assert listener.popen.poll() is None
    finally:
        receiver.stop()
    assert listener.interrupt() == 0


def test_an_app_access_token_listens_until_its_install_is_removed(
    listen: Listen,
    receiver: Receiver,
    channel: grpc.Channel,
    db,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
    internal: str,
) -> None:
    world = make_world(channel, db, new_partner, new_merchant)
    tokens = world.install(scope="orders:read events:read")
    listener = listen.start(tokens.access_token, "--forward-to", receiver.url)
    secret = listener.wait_ready()
    shop = Commerce(channel, new_merchant.test_key, internal)
    order = shop.paid_order()
    shop.refund(order.id, 100)  # refunds:read is not granted: never forwarded
    seen = listed_events(channel, tokens.access_token)
    assert not any(e.type.startswith("refund.") for e in seen)
    live = [e.id for e in seen if e.type != "install.created"]  # from before the start
    listener.wait_lines(len(live))

    world.installs.UninstallInstall(
        installs_pb.UninstallInstallRequest(id=tokens.install_id),
        metadata=bearer(new_merchant.test_key),
    )
    assert listener.wait_exit() == 1, listener.output()
    lines = parsed(listener.event_lines())
    assert [m["id"] for m in lines][: len(live)] == live
    assert lines[-1]["type"] == "install.uninstalled"
    assert "the app access token was refused" in "\n".join(listener.err)
    for request in receiver.received():
        Webhook(secret).verify(request.body, request.headers)
    assert tokens.access_token not in listener.output()


def _serve_on(database_url: str, port: int, log_dir: Path) -> Process:
    log_path = log_dir / f"grpc-{port}-{len(list(log_dir.iterdir()))}.log"
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "flint", "serve", "--port", str(port)],
            env=flint_env(database_url),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    process = Process(popen, log_path)
    from flint.supervisor import wait_for_grpc

    assert wait_for_grpc(port, 30), process.log()
    return process


def test_reconnects_with_backoff_and_resumes_when_the_server_comes_back(
    listen: Listen,
    receiver: Receiver,
    shop: Commerce,
    channel: grpc.Channel,
    database_url: str,
    tmp_path: Path,
) -> None:
    # A server and an Envoy of this test's own, so they can be stopped.
    port = free_port()
    server = _serve_on(database_url, port, tmp_path)
    own_edge = start_envoy(port, tmp_path)
    try:
        listener = listen.start(
            shop.key, "--forward-to", receiver.url, "--api-url", own_edge.url, api_url=False
        )
        listener.wait_ready()
        shop.create_order()
        listener.wait_lines(1)

        server.stop()
        poll(lambda: any("reconnecting in" in line for line in listener.err), what="a retry")
        shop.create_order()  # while the server is away
        poll(lambda: sum("reconnecting in" in line for line in listener.err) >= 2, what="retries")
        assert listener.popen.poll() is None
        failures = [line for line in listener.err if "reconnecting in" in line]
        # Envoy answers 503 while the server is away: retried, never fatal.
        assert all("(UPSTREAM_UNAVAILABLE)" in line for line in failures), failures

        server = _serve_on(database_url, port, tmp_path)
        lines = parsed(listener.wait_lines(2))
        assert "flint listen: connected again; resuming" in listener.err
        events = [e.id for e in listed_events(channel, shop.key)]
        assert [m["id"] for m in lines] == events
        poll(lambda: len(receiver.received()) >= 2, what="2 deliveries")
        assert receiver.ids() == events
        assert listener.interrupt() == 0
    finally:
        own_edge.process.stop()
        server.stop()


def test_state_names_an_app_by_its_install_so_a_refreshed_token_resumes(
    listen: Listen,
    receiver: Receiver,
    channel: grpc.Channel,
    db,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
    internal: str,
) -> None:
    world = make_world(channel, db, new_partner, new_merchant)
    tokens = world.install(scope="orders:read events:read")
    shop = Commerce(channel, new_merchant.test_key, internal)
    first = listen.start(tokens.access_token, "--forward-to", receiver.url)
    first.wait_ready()
    shop.create_order()
    first.wait_lines(1)
    assert first.interrupt() == 0

    shop.create_order()  # while stopped
    refreshed = world.refresh(tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token
    second = listen.start(refreshed.access_token, "--forward-to", receiver.url)
    second.wait_ready()
    shop.create_order()
    second.wait_lines(2)
    orders = [
        e.id for e in listed_events(channel, refreshed.access_token) if e.type == "order.created"
    ]
    poll(lambda: len(receiver.received()) >= 3, what="3 deliveries")
    assert receiver.ids() == orders
    assert second.interrupt() == 0
    saved = json.loads(next((listen.state_dir / "cursors").iterdir()).read_text())
    assert set(saved) == {"cursor"}
