"""Replaying events: one to one endpoint, a cursor range after an outage, and
what an endpoint missed while disabled — never an event the app may not see."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import field_mask_pb2

from flint.common.db import Database
from flint.installs.v1 import installs_service_pb2 as installs_pb
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from tests.commerce.support import Commerce
from tests.conftest import MerchantCreds, bearer
from tests.errors import grpc_error
from tests.webhooks.conftest import Hooks, wait_until_sequenced
from tests.webhooks.support import (
    deliveries,
    eventually,
    fast_settings,
    receiver,
    running_worker,
)


def replay(hooks: Hooks, endpoint_id: str, event_id: str) -> pb.WebhookDelivery:
    return hooks.stub.ReplayEvent(
        pb.ReplayEventRequest(id=endpoint_id, event_id=event_id), metadata=hooks.auth
    )


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_replay_event_sends_it_again_with_the_same_webhook_id(hooks: Hooks, db: Database):
    with receiver() as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        [first] = rx.wait_for(1)
        event_id = first.headers["webhook-id"]
        queued = replay(hooks, endpoint.id, event_id)
        assert queued.origin == pb.WEBHOOK_DELIVERY_ORIGIN_REPLAY
        assert queued.status == pb.WEBHOOK_DELIVERY_STATUS_PENDING
        _, second = rx.wait_for(2)
    assert second.headers["webhook-id"] == event_id
    assert second.body == first.body


def test_replay_of_another_merchants_event_is_refused(
    hooks: Hooks, db: Database, another_merchant: MerchantCreds
):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    stranger = Commerce(hooks.world.channel, another_merchant.test_key, hooks.world.internal)
    order = stranger.create_order()
    wait_until_sequenced(db)
    event_id = _event_of(db, order.id)
    details = grpc_error(refused(lambda: replay(hooks, endpoint.id, event_id)))
    assert (details.code, details.reason) == ("NOT_FOUND", "RESOURCE_NOT_FOUND")


def test_replay_of_an_event_outside_the_granted_scopes_is_refused(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks", events=("*",))
    invoice = hooks.merchant.new_invoice()  # the install has orders:read, not invoices:read
    wait_until_sequenced(db)
    event_id = _event_of(db, invoice.id)
    assert grpc_error(refused(lambda: replay(hooks, endpoint.id, event_id))).code == "NOT_FOUND"
    assert deliveries(db, endpoint.id) == []


def test_replay_after_uninstall_is_refused(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    order = hooks.merchant.create_order()
    wait_until_sequenced(db)
    install_id = _install_of(hooks)
    hooks.world.installs.UninstallInstall(
        installs_pb.UninstallInstallRequest(id=install_id),
        metadata=bearer(hooks.world.merchant.test_key),
    )
    event_id = _event_of(db, order.id)
    assert grpc_error(refused(lambda: replay(hooks, endpoint.id, event_id))).code == "NOT_FOUND"


def test_replay_of_an_unknown_event_is_not_found(hooks: Hooks):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    assert grpc_error(refused(lambda: replay(hooks, endpoint.id, "evt_nope"))).code == "NOT_FOUND"


def test_replay_without_an_event_id_names_the_missing_field(hooks: Hooks):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    details = grpc_error(refused(lambda: replay(hooks, endpoint.id, "")))
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "FIELD_REQUIRED",
        ["event_id"],
    )


def test_bulk_replay_of_a_cursor_range_after_an_outage(hooks: Hooks, db: Database):
    no_retries = fast_settings(schedule=())
    with receiver() as rx:
        rx.default = (503, b"down", {})
        with running_worker(db, no_retries):
            endpoint = hooks.create_endpoint(rx.url)
            for _ in range(3):
                hooks.merchant.create_order()
            eventually(lambda: [d.status for d in deliveries(db, endpoint.id)] == ["failed"] * 3)
        outage = rx.wait_for(3)
        cursors = [json.loads(r.body)["cursor"] for r in outage]
        ids = [r.headers["webhook-id"] for r in outage]
        rx.default = (200, b"ok", {})

        def call(token: str = "") -> pb.ReplayEventsResponse:
            return hooks.stub.ReplayEvents(
                pb.ReplayEventsRequest(
                    id=endpoint.id,
                    start_cursor=min(cursors, key=_position),
                    end_cursor=max(cursors, key=_position),
                    limit=2,
                    page_token=token,
                ),
                metadata=hooks.auth,
            )

        first = call()
        assert (first.queued, first.examined) == (2, 2)
        assert first.next_page_token
        second = call(first.next_page_token)
        assert (second.queued, second.examined, second.next_page_token) == (1, 1, "")
        with running_worker(db):
            rx.wait_for(6)
            eventually(
                lambda: (
                    sorted(d.status for d in deliveries(db, endpoint.id))
                    == ["failed"] * 3 + ["succeeded"] * 3
                )
            )
    assert sorted(rx.ids()[3:]) == sorted(ids)


def test_page_token_of_another_range_is_refused(hooks: Hooks):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    first = hooks.stub.ReplayEvents(
        pb.ReplayEventsRequest(id=endpoint.id, start_cursor="1", limit=1), metadata=hooks.auth
    )
    assert first.next_page_token
    details = grpc_error(
        refused(
            lambda: hooks.stub.ReplayEvents(
                pb.ReplayEventsRequest(
                    id=endpoint.id, start_cursor="2", page_token=first.next_page_token
                ),
                metadata=hooks.auth,
            )
        )
    )
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "INVALID_PAGE_TOKEN")


def test_bulk_replay_needs_a_range(hooks: Hooks):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    details = grpc_error(
        refused(
            lambda: hooks.stub.ReplayEvents(
                pb.ReplayEventsRequest(id=endpoint.id), metadata=hooks.auth
            )
        )
    )
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "RANGE_REQUIRED")


def test_bulk_replay_of_a_reversed_cursor_range_is_refused(hooks: Hooks):
    # Rather than answering "nothing to replay" to swapped ends.
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    details = grpc_error(
        refused(
            lambda: hooks.stub.ReplayEvents(
                pb.ReplayEventsRequest(id=endpoint.id, start_cursor="20", end_cursor="10"),
                metadata=hooks.auth,
            )
        )
    )
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "INVALID_RANGE",
        ["end_cursor"],
    )


def test_bulk_replay_of_a_reversed_time_range_is_refused(hooks: Hooks):
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    request = pb.ReplayEventsRequest(id=endpoint.id)
    request.start_time.FromSeconds(2_000_000_000)
    request.end_time.FromSeconds(1_000_000_000)
    details = grpc_error(refused(lambda: hooks.stub.ReplayEvents(request, metadata=hooks.auth)))
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "INVALID_RANGE",
        ["end_time"],
    )


def test_bulk_replay_does_not_examine_another_apps_endpoint_events(hooks: Hooks, db: Database):
    from flint.common.events import EventRecord, record_event

    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks", events=("*",))
    with db.unit_of_work() as uow:
        event_id = record_event(
            uow,
            merchant_id="",
            environment="test",
            type="webhook_endpoint.disabled",
            object_type="webhook_endpoint",
            object_id="we_of_another_app",
            object_version=2,
            data={},
            app_id="app_another",
        )
        uow.commit()
    wait_until_sequenced(db)
    with db.read() as session:
        cursor = session.get_one(EventRecord, event_id).cursor
    result = hooks.stub.ReplayEvents(
        pb.ReplayEventsRequest(id=endpoint.id, start_cursor=str(cursor), end_cursor=str(cursor)),
        metadata=hooks.auth,
    )
    # Not even counted: another app's events are none of this partner's business.
    assert (result.queued, result.examined) == (0, 0)


def test_reenabling_reports_what_was_missed_and_replays_it(hooks: Hooks, db: Database):
    with receiver() as rx:
        endpoint = hooks.create_endpoint(rx.url)
        disable = pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(
                id=endpoint.id, status=pb.WEBHOOK_ENDPOINT_STATUS_DISABLED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        )
        hooks.stub.UpdateWebhookEndpoint(disable, metadata=hooks.auth)
        hooks.merchant.create_order()
        hooks.merchant.create_order()
        wait_until_sequenced(db)
        assert [d.status for d in deliveries(db, endpoint.id)] == ["skipped", "skipped"]
        enable = pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(
                id=endpoint.id, status=pb.WEBHOOK_ENDPOINT_STATUS_ENABLED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        )
        enabled = hooks.stub.UpdateWebhookEndpoint(enable, metadata=hooks.auth)
        assert enabled.status == pb.WEBHOOK_ENDPOINT_STATUS_ENABLED
        assert enabled.missed.count == 2
        result = hooks.stub.ReplayEvents(
            pb.ReplayEventsRequest(
                id=endpoint.id, only_missed=True, start_time=enabled.missed.start_time
            ),
            metadata=hooks.auth,
        )
        assert result.queued == 2
        again = hooks.stub.ReplayEvents(
            pb.ReplayEventsRequest(
                id=endpoint.id, only_missed=True, start_time=enabled.missed.start_time
            ),
            metadata=hooks.auth,
        )
        assert again.queued == 0  # already queued: not twice
        with running_worker(db):
            rx.wait_for(2)


def _position(cursor: str) -> int:
    return int(cursor.split(".", 1)[0])


def _event_of(db: Database, object_id: str) -> str:
    from sqlalchemy import select

    from flint.common.events import EventRecord

    with db.read() as session:
        found = session.scalar(
            select(EventRecord.id).where(EventRecord.object_id == object_id).limit(1)
        )
    assert found is not None
    return found


def _install_of(hooks: Hooks) -> str:
    listed = hooks.world.installs.ListInstalls(
        installs_pb.ListInstallsRequest(), metadata=bearer(hooks.world.merchant.test_key)
    )
    return next(i.id for i in listed.installs if i.app_id == hooks.app_id)
