"""The SDK against Flint started for real (`flint up`: gRPC server, Envoy,
hosted app): typed calls, errors, idempotent retries and pagination."""

from __future__ import annotations

import pytest

from flint.commerce.v1 import resources_pb2 as commerce
from flint.events.v1 import events_service_pb2 as events_pb
from flint.sdk import (
    AuthenticationError,
    FlintClient,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from tests.sdk.conftest import Seed, order_body
from tests.sdk.proxy import ChaosProxy

pytestmark = pytest.mark.e2e


def test_create_get_and_list_orders_with_a_merchant_key(merchant: FlintClient):
    created = merchant.orders.create(order_body(1250))
    assert isinstance(created, commerce.Order)
    assert created.id.startswith("ord_")
    assert created.status == commerce.ORDER_STATUS_OPEN
    assert created.total == 1250

    fetched = merchant.orders.get(created.id)
    assert fetched.id == created.id
    assert fetched.line_items[0].name == "Mug"

    noted = merchant.orders.add_note(created.id, "Gift wrap, please")
    assert [note.text for note in noted.notes] == ["Gift wrap, please"]
    updated = merchant.orders.update(
        {"id": created.id, "customer_email": "bob@example.com"}, ["customer_email"]
    )
    assert updated.customer_email == "bob@example.com"
    kinds = [entry.kind for entry in merchant.orders.timeline(created.id).entries]
    assert kinds[0] == commerce.TIMELINE_ENTRY_KIND_CREATED

    assert [o.id for o in merchant.orders.list(status="ORDER_STATUS_OPEN")] == [created.id]
    assert merchant.orders.cancel(created.id).status == commerce.ORDER_STATUS_CANCELED


def test_the_list_iterator_walks_every_page(merchant: FlintClient):
    ids = [merchant.orders.create(order_body(100 + n)).id for n in range(5)]

    first = merchant.orders.list_page(page_size=2)
    assert len(first.orders) == 2
    assert first.next_page_token

    # Newest first, across three pages of two.
    assert [o.id for o in merchant.orders.list(page_size=2)] == ids[::-1]
    created = list(merchant.events.list(types=["order.created"], page_size=2))
    assert [e.object_id for e in created] == ids
    assert all(isinstance(e, events_pb.Event) for e in created)


def test_invalid_input_raises_invalid_request_error_with_field_violations(
    merchant: FlintClient,
):
    with pytest.raises(InvalidRequestError) as caught:
        merchant.orders.create({"currency": "usd", "line_items": []})
    error = caught.value
    assert error.status == 400
    assert error.code_name == "INVALID_ARGUMENT"
    assert error.reason
    assert any(v.field.endswith("line_items") for v in error.field_violations)
    assert error.request_id


def test_unknown_object_raises_not_found_error(merchant: FlintClient):
    with pytest.raises(NotFoundError) as caught:
        merchant.orders.get("ord_01J00000000000000000000000")
    assert caught.value.reason == "RESOURCE_NOT_FOUND"


def test_bad_key_raises_authentication_error(seed: Seed):
    with (
        FlintClient(api_key="sk_test_nope", base_url=seed.base_url) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.orders.get("ord_01J00000000000000000000000")
    assert caught.value.status == 401
    assert caught.value.reason.startswith("CREDENTIAL_")


def test_missing_scope_raises_permission_denied_naming_the_scope(seed: Seed):
    tokens = seed.dev_install("orders:read")
    with (
        FlintClient(api_key=tokens["access_token"], base_url=seed.base_url) as app,
        pytest.raises(PermissionDeniedError) as caught,
    ):
        app.orders.create(order_body())
    assert caught.value.reason == "SCOPE_MISSING"
    assert "orders:write" in caught.value.metadata.values()


def test_a_write_whose_response_was_lost_is_retried_with_the_same_key_and_applies_once(
    seed: Seed, merchant: FlintClient, flint_up: int
):
    with ChaosProxy(flint_up) as proxy:
        proxy.drop_responses = 1
        with FlintClient(api_key=seed.test_key, base_url=proxy.url) as through_proxy:
            order = through_proxy.orders.create(order_body(4321))
        assert proxy.connections == 2
        (key,) = set(proxy.idempotency_keys)
        assert len(proxy.idempotency_keys) == 2

    assert [o.id for o in merchant.orders.list()] == [order.id]
    assert key


def test_a_caller_supplied_idempotency_key_returns_the_same_object(merchant: FlintClient):
    first = merchant.orders.create(order_body(777), idempotency_key="order-777")
    again = merchant.orders.create(order_body(777), idempotency_key="order-777")
    assert again.id == first.id
    with pytest.raises(InvalidRequestError) as caught:
        merchant.orders.create(order_body(778), idempotency_key="order-777")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
