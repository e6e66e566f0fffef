"""verify_webhook against signatures made by the `standardwebhooks` package."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from flint.events.v1 import events_service_pb2 as events_pb
from flint.sdk import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
EVENT = {
    "id": "evt_01JTEST",
    "type": "order.paid",
    "created": "2026-01-02T03:04:05Z",
    "environment": "ENVIRONMENT_TEST",
    "merchant_id": "mer_01JTEST",
    "cursor": "1042.abc",
    "object_version": "2",
    "object_type": "order",
    "object_id": "ord_01JTEST",
    "data": {"object": {"id": "ord_01JTEST", "status": "ORDER_STATUS_PAID", "total": "3499"}},
    "field_from_a_newer_server": True,
}


def signed(
    body: bytes, secret: str = SECRET, at: float | None = None, msg_id: str = "evt_01JTEST"
) -> dict[str, str]:
    when = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(int(when.timestamp())),
        "Webhook-Signature": signature,
    }


BODY = json.dumps(EVENT).encode()


def test_a_standard_webhooks_signature_verifies_and_gives_the_typed_event():
    event = verify_webhook(BODY, signed(BODY), SECRET)
    assert isinstance(event, events_pb.Event)
    assert event.type == "order.paid"
    assert event.object_version == 2
    assert event.data["object"]["status"] == "ORDER_STATUS_PAID"


def test_any_of_several_secrets_and_signatures_verifies_during_rotation():
    headers = signed(BODY, OTHER_SECRET)
    headers["Webhook-Signature"] = "v1,bm90IGl0 " + headers["Webhook-Signature"]
    assert verify_webhook(BODY, headers, [SECRET, OTHER_SECRET]).id == "evt_01JTEST"


def test_a_tampered_body_is_refused():
    tampered = BODY.replace(b"3499", b"1")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(tampered, signed(BODY), SECRET)


def test_a_wrong_secret_is_refused():
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, signed(BODY), OTHER_SECRET)


def test_a_stale_timestamp_is_refused():
    headers = signed(BODY, at=time.time() - 301)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(BODY, headers, SECRET)


def test_a_future_timestamp_is_refused():
    # A whole second past the tolerance: the header carries whole seconds.
    headers = signed(BODY, at=time.time() + 302)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_webhook(BODY, headers, SECRET)


def test_a_changed_webhook_id_is_refused():
    headers = signed(BODY)
    headers["Webhook-Id"] = "evt_other"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, headers, SECRET)


def test_missing_headers_are_refused():
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(BODY, {}, SECRET)


def test_a_verified_payload_that_is_not_an_event_is_refused():
    body = b"not json"
    with pytest.raises(WebhookVerificationError, match="not an event"):
        verify_webhook(body, signed(body), SECRET)
