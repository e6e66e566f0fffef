"""The sample plugin's habits, against a real Flint and the plugin's real
process: one note per paid order however often the event arrives, no action on
a stale event, 400 to a delivery it cannot verify, and a re-sync on start that
handles what it missed while it was down."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser
from thankyou_plugin.plugin import Settings, ThankYouPlugin
from thankyou_plugin.store import Store

from flint.commerce.v1.resources_pb2 import TIMELINE_ENTRY_KIND_NOTE_ADDED
from flint.events.v1.events_service_pb2 import Event
from flint.sdk import Tokens
from flint.sdk.webhook_verification import sign
from tests.conftest import wait_until
from tests.e2e.test_readme_commerce import pay_in_browser
from tests.examples.conftest import PluginStack

THANKS = "Note added by Thank You Notes: Thanked ann@example.com for their order"
SHOP = "https://shop.example.com/thanks"


def paid_order(stack: PluginStack, browser: Browser) -> Event:
    """An order of the merchant's, paid on the hosted checkout; its order.paid event."""
    order = stack.merchant.orders.create(
        {
            "currency": "usd",
            "customer_email": "ann@example.com",
            "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": 1500}],
        }
    )
    session = stack.merchant.checkout_sessions.create(
        {"order_id": order.id, "success_url": SHOP, "cancel_url": "https://shop.example.com/cart"}
    )
    pay_in_browser(browser, session.url, lands_on=SHOP)
    events: list[Event] = []
    wait_until(
        lambda: (
            events.extend(stack.merchant.events.list(object_id=order.id, types=["order.paid"]))
            or events
        )
    )
    return events[0]


def notes(stack: PluginStack, order_id: str) -> list[str]:
    timeline = stack.merchant.orders.timeline(order_id)
    return [e.summary for e in timeline.entries if e.kind == TIMELINE_ENTRY_KIND_NOTE_ADDED]


def endpoint_id(stack: PluginStack) -> str:
    (endpoint,) = stack.partner.webhook_endpoints.list(stack.app_id)
    return endpoint.id


def responses(stack: PluginStack, event_id: str) -> list[str]:
    """What the plugin answered to each delivery attempt of the event, oldest first."""
    attempts = stack.partner.webhook_deliveries.attempts(
        endpoint_id=endpoint_id(stack), event_id=event_id
    )
    ordered = sorted(attempts, key=lambda a: a.start_time.ToNanoseconds())
    return [a.response_body if a.status_code else "refused" for a in ordered]


def test_paid_order_gets_one_note_even_when_its_event_is_delivered_twice(
    stack: PluginStack, browser: Browser
):
    paid = paid_order(stack, browser)
    wait_until(lambda: notes(stack, paid.object_id) == [THANKS], timeout=20)

    stack.partner.webhook_endpoints.replay_event(endpoint_id(stack), paid.id)

    wait_until(lambda: responses(stack, paid.id) == ["handled", "duplicate"], timeout=20)
    assert notes(stack, paid.object_id) == [THANKS]


def test_event_older_than_one_already_handled_is_ignored(stack: PluginStack, browser: Browser):
    endpoint = endpoint_id(stack)
    store = Store(Path(stack.database))
    # order.paid is held back while a newer event of the same order arrives.
    stack.partner.webhook_endpoints.update(
        {"id": endpoint, "enabled_events": ["order.created", "order.note_added"]},
        ["enabled_events"],
    )
    try:
        paid = paid_order(stack, browser)
        stack.merchant.orders.add_note(paid.object_id, "Gift wrap, please")
        wait_until(lambda: store.newest_version(paid.object_id) > paid.object_version)
    finally:
        stack.partner.webhook_endpoints.update(
            {"id": endpoint, "enabled_events": ["order.*", "install.uninstalled"]},
            ["enabled_events"],
        )

    stack.partner.webhook_endpoints.replay_event(endpoint, paid.id)  # order.paid, late

    wait_until(lambda: responses(stack, paid.id) == ["stale"], timeout=20)
    assert notes(stack, paid.object_id) == ["Note added: Gift wrap, please"]
    order = store.order(paid.object_id)
    assert order is not None
    assert not order.thanked


def test_delivery_that_fails_verification_is_refused_with_400(stack: PluginStack):
    event = next(iter(stack.merchant.events.list(types=["order.created"])))
    body = httpx.get(
        f"{stack.flint_url}/v1/events/{event.id}",
        headers={"Authorization": f"Bearer {stack.merchant_key}"},
    ).content
    secret = Store(Path(stack.database)).webhook_endpoint(stack.app_id)
    assert secret is not None
    now = int(time.time())

    def deliver(payload: bytes, key: str = secret[1], timestamp: int = now, **extra: str) -> int:
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, event.id, timestamp, payload),
            **extra,
        }
        url = f"{stack.plugin.url}/webhooks"
        return httpx.post(url, content=payload, headers=headers).status_code

    other_secret = "whsec_" + "c2VjcmV0LW9mLXNvbWVvbmUtZWxzZQ=="
    assert deliver(body, key=other_secret) == 400
    tampered = body.replace(event.object_id.encode(), b"ord_someone_elses")
    assert deliver(tampered, **{"webhook-signature": sign(secret[1], event.id, now, body)}) == 400
    assert deliver(body, timestamp=now - 3600) == 400
    assert httpx.post(f"{stack.plugin.url}/webhooks", content=body).status_code == 400
    assert deliver(body) == 200  # the same delivery, correctly signed


def test_events_missed_while_down_are_handled_by_the_resync_on_start(
    stack: PluginStack, browser: Browser
):
    stack.plugin.stop()
    try:
        paid = paid_order(stack, browser)
        wait_until(lambda: responses(stack, paid.id)[:1] == ["refused"], timeout=20)
    finally:
        stack.plugin.start()  # re-syncs before it serves

    handled = {e.event_id: e for e in Store(Path(stack.database)).handled_events()}
    assert handled[paid.id].source == "resync"
    assert handled[paid.id].outcome == "handled"
    wait_until(lambda: notes(stack, paid.object_id) == [THANKS])


def test_support_actions_need_the_support_token(stack: PluginStack):
    for path in ("/resync", "/orders/ord_x/refund"):
        assert httpx.post(f"{stack.plugin.url}{path}").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.post(f"{stack.plugin.url}{path}", headers=wrong).status_code == 401
    token = {"Authorization": f"Bearer {stack.support_token}"}
    httpx.post(f"{stack.plugin.url}/resync", headers=token).raise_for_status()
    # Everything is handled now: a second re-sync finds nothing new.
    assert httpx.post(f"{stack.plugin.url}/resync", headers=token).json() == {"handled": 0}


def test_resync_drops_an_install_whose_tokens_were_revoked_while_it_was_away(
    stack: PluginStack, tmp_path: Path
):
    # The plugin was down for longer than an access token lives, and meanwhile
    # the install ended: its refresh token is refused (invalid_grant).
    env = stack.plugin.env
    plugin = ThankYouPlugin(
        Settings(
            flint_url=stack.flint_url,
            client_id=env["FLINT_CLIENT_ID"],
            client_secret=env["FLINT_CLIENT_SECRET"],
            app_id=stack.app_id,
            partner_key=env["FLINT_PARTNER_KEY"],
            public_url=stack.plugin.url,
            database=tmp_path / "thankyou.db",
            support_token=stack.support_token,
        )
    )
    try:
        gone = Tokens(
            access_token="expired",
            refresh_token="revoked",
            expires_at=0.0,
            install_id="ins_gone",
            merchant_id="mer_gone",
            environment="test",
        )
        plugin.store.save_install(gone)
        plugin.store.save_since(gone.install_id, "2026-01-01T00:00:00Z")
        assert plugin.resync() == 0
        assert plugin.store.installs() == []
    finally:
        plugin.close()
