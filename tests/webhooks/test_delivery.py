"""Deliveries end to end: real orders through the API, the real sequencer in the
server, a real worker and real HTTP receivers on loopback. Signatures are
checked with the independent `standardwebhooks` library."""

from __future__ import annotations

import json
import time

from sqlalchemy import select
from standardwebhooks import Webhook

from flint.common.db import Database
from flint.common.events import EventRecord
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from tests.webhooks.conftest import Hooks
from tests.webhooks.support import (
    attempts,
    deliveries,
    eventually,
    fast_settings,
    receiver,
    running_worker,
)


def delivered(db: Database, endpoint_id: str, count: int = 1, status: str = "succeeded") -> list:
    def check() -> list:
        found = [d for d in deliveries(db, endpoint_id) if d.status == status]
        assert len(found) >= count, [(d.status, d.last_error) for d in deliveries(db, endpoint_id)]
        return found

    return eventually(check)


def test_order_event_is_delivered_signed_and_verifies_with_standardwebhooks(
    hooks: Hooks, db: Database
):
    with receiver() as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url, events=("order.created",))
        order = hooks.merchant.create_order()
        [request] = rx.wait_for(1)
        delivered(db, endpoint.id)
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert payload["type"] == "order.created"
    assert payload["data"]["object"]["id"] == order.id
    assert payload["id"] == request.headers["webhook-id"]
    assert payload["environment"] == "ENVIRONMENT_TEST"
    assert payload["cursor"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60


def test_receiver_answering_500_then_200_is_retried_and_both_attempts_are_kept(
    hooks: Hooks, db: Database
):
    with receiver((500, b"boom", {}), (200, b"thanks", {})) as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        first, second = rx.wait_for(2)
        [delivery] = delivered(db, endpoint.id)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    tries = attempts(db, delivery.id)
    assert [(a.number, a.outcome, a.status_code) for a in tries] == [
        (1, "failed", 500),
        (2, "succeeded", 200),
    ]
    assert tries[0].response_body == "boom"
    assert tries[0].error == "HTTP 500"
    assert tries[1].response_body == "thanks"
    assert all(a.latency_ms >= 0 and a.finished_at is not None for a in tries)
    assert delivery.attempt_count == 2


def test_receiver_that_hangs_times_out_and_is_retried(hooks: Hooks, db: Database):
    settings = fast_settings(read_timeout=0.5, total_timeout=1.0)
    with receiver("hang", (200, b"ok", {})) as rx, running_worker(db, settings):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        rx.wait_for(2)
        [delivery] = delivered(db, endpoint.id)
    first, second = attempts(db, delivery.id)
    assert first.outcome == "failed"
    assert first.status_code == 0
    assert first.error.startswith("timed out")
    assert second.outcome == "succeeded"


def test_410_gone_disables_the_endpoint_at_once(hooks: Hooks, db: Database):
    with receiver((410, b"gone", {})) as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        [delivery] = delivered(db, endpoint.id, status="failed")
        hooks.merchant.create_order()
        time.sleep(0.5)
    assert len(rx.requests) == 1
    assert delivery.attempt_count == 1

    def get() -> pb.WebhookEndpoint:
        return hooks.stub.GetWebhookEndpoint(
            pb.GetWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
        )

    assert get().status == pb.WEBHOOK_ENDPOINT_STATUS_DISABLED
    assert get().disabled_reason == pb.WEBHOOK_ENDPOINT_DISABLED_REASON_GONE
    # The failed delivery and the second order's (skipped) one are what it missed.
    assert eventually(lambda: get().missed.count == 2)
    with db.read() as session:
        [event] = session.scalars(
            select(EventRecord).where(
                EventRecord.type == "webhook_endpoint.disabled",
                EventRecord.object_id == endpoint.id,
            )
        )
    assert event.app_id == hooks.app_id
    assert event.data["disabled_reason"] == "WEBHOOK_ENDPOINT_DISABLED_REASON_GONE"


def test_deliberate_4xx_is_not_retried(hooks: Hooks, db: Database):
    with receiver((400, b"bad", {})) as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        [delivery] = delivered(db, endpoint.id, status="failed")
        time.sleep(0.5)
    assert len(rx.requests) == 1
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 400


def test_429_is_retried(hooks: Hooks, db: Database):
    throttled = (429, b"slow down", {"retry-after": "0"})
    with receiver(throttled, (200, b"", {})) as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        rx.wait_for(2)
        delivered(db, endpoint.id)


def test_redirect_is_not_followed(hooks: Hooks, db: Database):
    with (
        receiver() as target,
        receiver((302, b"", {"location": "http://127.0.0.1:1/elsewhere"}), (200, b"", {})) as rx,
    ):
        target.default = (200, b"", {})
        with running_worker(db):
            endpoint = hooks.create_endpoint(rx.url)
            hooks.merchant.create_order()
            [delivery] = delivered(db, endpoint.id)
    first = attempts(db, delivery.id)[0]
    assert first.status_code == 302
    assert "not followed" in first.error
    assert target.requests == []


def test_test_method_sends_webhook_endpoint_test_at_once(hooks: Hooks, db: Database):
    with receiver((200, b"pong", {})) as rx:
        endpoint = hooks.create_endpoint(rx.url)
        result = hooks.stub.TestWebhookEndpoint(
            pb.TestWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
        )
        [request] = rx.requests  # sent before the call returned, with no worker running
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert payload["type"] == "webhook_endpoint.test"
    assert payload["data"]["object"]["id"] == endpoint.id
    assert "secret" not in payload["data"]["object"]
    assert result.attempt.status_code == 200
    assert result.attempt.response_body == "pong"
    assert result.attempt.outcome == pb.WEBHOOK_ATTEMPT_OUTCOME_SUCCEEDED
    assert result.delivery.status == pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
    assert result.delivery.origin == pb.WEBHOOK_DELIVERY_ORIGIN_TEST
    assert result.delivery.event_id == request.headers["webhook-id"]


def test_test_method_reports_a_failing_receiver_without_retrying(hooks: Hooks, db: Database):
    with receiver((503, b"down", {})) as rx:
        endpoint = hooks.create_endpoint(rx.url)
        result = hooks.stub.TestWebhookEndpoint(
            pb.TestWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
        )
        with running_worker(db):
            time.sleep(0.5)
    assert len(rx.requests) == 1
    assert result.attempt.status_code == 503
    assert result.delivery.status == pb.WEBHOOK_DELIVERY_STATUS_FAILED


def test_every_attempt_is_listed_per_endpoint_per_event_and_per_delivery(
    hooks: Hooks, db: Database
):
    with receiver((500, b"", {}), (200, b"", {})) as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        rx.wait_for(2)
        [delivery] = delivered(db, endpoint.id)
    stub, auth = hooks.stub, hooks.auth
    by_endpoint = stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(endpoint_id=endpoint.id), metadata=auth
    )
    assert [d.id for d in by_endpoint.deliveries] == [delivery.id]
    by_event = stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(app_id=hooks.app_id, event_id=delivery.event_id),
        metadata=auth,
    )
    assert [d.id for d in by_event.deliveries] == [delivery.id]
    got = stub.GetWebhookDelivery(pb.GetWebhookDeliveryRequest(id=delivery.id), metadata=auth)
    assert got.status == pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
    assert got.attempt_count == 2
    per_delivery = stub.ListWebhookDeliveryAttempts(
        pb.ListWebhookDeliveryAttemptsRequest(delivery_id=delivery.id), metadata=auth
    )
    assert [(a.attempt_number, a.status_code) for a in per_delivery.attempts] == [
        (2, 200),
        (1, 500),
    ]
    first_page = stub.ListWebhookDeliveryAttempts(
        pb.ListWebhookDeliveryAttemptsRequest(
            endpoint_id=endpoint.id, event_id=delivery.event_id, page_size=1
        ),
        metadata=auth,
    )
    assert [a.attempt_number for a in first_page.attempts] == [2]
    second_page = stub.ListWebhookDeliveryAttempts(
        pb.ListWebhookDeliveryAttemptsRequest(
            endpoint_id=endpoint.id,
            event_id=delivery.event_id,
            page_size=1,
            page_token=first_page.next_page_token,
        ),
        metadata=auth,
    )
    assert [a.attempt_number for a in second_page.attempts] == [1]
    assert second_page.next_page_token == ""


def test_body_is_the_event_json_of_the_events_api(hooks: Hooks, db: Database):
    with receiver() as rx, running_worker(db):
        hooks.create_endpoint(rx.url, events=("order.*",))
        hooks.merchant.create_order()
        [request] = rx.wait_for(1)
    body = json.loads(request.body)
    assert set(body) >= {"id", "type", "created", "environment", "cursor", "data"}
    assert body["object_version"] == "1" or body["object_version"] == 1


def test_an_idle_worker_is_woken_by_a_new_event_not_by_its_poll(hooks: Hooks, db: Database):
    """The sequencer's NOTIFY (PostgreSQL) or the commit in the write-ahead log
    (SQLite) wakes the worker: a delivery goes out long before the next poll."""
    with receiver() as rx, running_worker(db, poll_seconds=60):
        hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        rx.wait_for(1, timeout=10)  # the worker is up, has sent it, and idles
        hooks.merchant.create_order()
        rx.wait_for(2, timeout=5)
