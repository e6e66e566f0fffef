"""Which endpoints an event reaches: the install's grant and scopes, the
endpoint's environments and types, install lifecycle events, disabled endpoints."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.installs.v1 import installs_service_pb2 as installs_pb
from flint.webhooks.fanout import fan_out, subscribes
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from tests.commerce.support import Commerce
from tests.conftest import MerchantCreds, bearer
from tests.webhooks.conftest import LIVE, TEST, Hooks, wait_until_sequenced
from tests.webhooks.support import deliveries

NOWHERE = "http://127.0.0.1:9/hooks"


def types_delivered(db: Database, endpoint_id: str) -> list[str]:
    wait_until_sequenced(db)
    return [d.event_type for d in deliveries(db, endpoint_id)]


def test_subscription_patterns():
    assert subscribes(["*"], "order.paid")
    assert subscribes(["order.paid"], "order.paid")
    assert subscribes(["order.*"], "order.paid")
    assert not subscribes(["order.*"], "orders.paid")
    assert not subscribes(["refund.*", "order.created"], "order.paid")
    assert subscribes(["checkout.*"], "checkout.session.completed")


def test_only_subscribed_types_are_delivered(hooks: Hooks, db: Database):
    created = hooks.create_endpoint(NOWHERE, events=("order.created",))
    canceled = hooks.create_endpoint(NOWHERE, events=("order.canceled",))
    order = hooks.merchant.create_order()
    hooks.merchant.orders.CancelOrder(
        orders_pb.CancelOrderRequest(id=order.id), metadata=hooks.merchant.auth
    )
    assert types_delivered(db, created.id) == ["order.created"]
    assert types_delivered(db, canceled.id) == ["order.canceled"]


def test_endpoint_for_live_only_gets_no_test_events(hooks: Hooks, db: Database):
    live = hooks.create_endpoint("https://hooks.example.com/x", environments=(LIVE,))
    hooks.merchant.create_order()
    assert types_delivered(db, live.id) == []


def test_live_events_need_a_live_grant(hooks: Hooks, db: Database):
    both = hooks.create_endpoint("https://hooks.example.com/x", environments=(TEST, LIVE))
    live_merchant = Commerce(
        hooks.world.channel, hooks.world.merchant.live_key, hooks.world.internal
    )
    live_merchant.create_order()  # no live grant yet
    assert types_delivered(db, both.id) == []
    hooks.world.install(scope="orders:read", environment="live")
    live_merchant.create_order()
    assert types_delivered(db, both.id) == ["order.created"]


def test_events_outside_the_granted_scopes_are_not_delivered(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint(NOWHERE, events=("*",))
    hooks.merchant.new_invoice()  # invoices:read was not granted
    hooks.merchant.create_order()
    assert types_delivered(db, endpoint.id) == ["order.created"]


def test_other_merchants_events_are_not_delivered(
    hooks: Hooks, db: Database, another_merchant: MerchantCreds
):
    endpoint = hooks.create_endpoint(NOWHERE, events=("*",))
    Commerce(hooks.world.channel, another_merchant.test_key, hooks.world.internal).create_order()
    assert types_delivered(db, endpoint.id) == []


def test_uninstall_reaches_the_app_and_nothing_follows(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint(NOWHERE, events=("*",))
    listed = hooks.world.installs.ListInstalls(
        installs_pb.ListInstallsRequest(), metadata=bearer(hooks.world.merchant.test_key)
    )
    install_id = next(i.id for i in listed.installs if i.app_id == hooks.app_id)
    hooks.world.installs.UninstallInstall(
        installs_pb.UninstallInstallRequest(id=install_id),
        metadata=bearer(hooks.world.merchant.test_key),
    )
    hooks.merchant.create_order()
    assert types_delivered(db, endpoint.id) == ["install.uninstalled"]


def test_revoked_grant_is_told_then_nothing_more(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint(NOWHERE, events=("*",))
    listed = hooks.world.installs.ListInstalls(
        installs_pb.ListInstallsRequest(), metadata=bearer(hooks.world.merchant.test_key)
    )
    install_id = next(i.id for i in listed.installs if i.app_id == hooks.app_id)
    hooks.world.installs.RevokeGrant(
        installs_pb.RevokeGrantRequest(id=install_id, environment=TEST),
        metadata=bearer(hooks.world.merchant.test_key),
    )
    hooks.merchant.create_order()
    assert types_delivered(db, endpoint.id) == ["install.grant_revoked"]


def test_disabled_endpoint_records_skipped_deliveries(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint(NOWHERE)
    hooks.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(
                id=endpoint.id, status=pb.WEBHOOK_ENDPOINT_STATUS_DISABLED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=hooks.auth,
    )
    hooks.merchant.create_order()
    wait_until_sequenced(db)
    assert [d.status for d in deliveries(db, endpoint.id)] == ["skipped"]


def test_deleted_endpoint_gets_nothing(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint(NOWHERE)
    hooks.stub.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
    )
    hooks.merchant.create_order()
    assert types_delivered(db, endpoint.id) == []


def test_an_event_is_fanned_out_once_per_endpoint(hooks: Hooks, db: Database):
    endpoint = hooks.create_endpoint(NOWHERE)
    order = hooks.merchant.create_order()
    wait_until_sequenced(db)
    with db.unit_of_work() as uow:
        event = uow.session.scalars(
            select(EventRecord).where(EventRecord.object_id == order.id)
        ).one()
        fan_out(uow, [event])
        with pytest.raises(IntegrityError):
            uow.session.flush()
    assert len(deliveries(db, endpoint.id)) == 1
