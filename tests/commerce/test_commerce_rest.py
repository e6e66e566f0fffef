"""Commerce through Envoy: the JSON shape plugin developers see, and the bad
inputs only REST can send (fractional and out-of-range numbers)."""

from __future__ import annotations

import pytest

from tests.errors import rest_error


@pytest.fixture
def auth(new_merchant) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_merchant.test_key}"}


ORDER = {"currency": "usd", "line_items": [{"name": "Mug", "quantity": 2, "unit_amount": 1250}]}


def test_order_json_uses_stripe_names(rest, auth):
    response = rest.post(
        "/v1/orders", json={**ORDER, "customer_email": "a@example.com"}, headers=auth
    )
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["line_items"][0] == {
        "name": "Mug",
        "quantity": "2",
        "unit_amount": "1250",
        "sku": "",
        "amount": "2500",
    }
    assert (order["total"], order["currency"], order["status"]) == (
        "2500",
        "usd",
        "ORDER_STATUS_OPEN",
    )
    assert order["customer_email"] == "a@example.com"


def test_same_idempotency_key_returns_the_same_order(rest, auth):
    headers = {**auth, "Idempotency-Key": "rest-order-1"}
    first = rest.post("/v1/orders", json=ORDER, headers=headers)
    second = rest.post("/v1/orders", json=ORDER, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    reused = rest.post("/v1/orders", json={**ORDER, "currency": "eur"}, headers=headers)
    assert reused.status_code == 400
    assert rest_error(reused).reason == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize(
    "unit_amount",
    [10.5, "10.5", 99999999999999999999, "abc"],
    ids=["fractional", "fractional-string", "int64-overflow", "not-a-number"],
)
def test_malformed_amounts_are_refused_by_the_edge(rest, auth, unit_amount):
    body = {
        "currency": "usd",
        "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": unit_amount}],
    }
    response = rest.post("/v1/orders", json=body, headers=auth)
    assert response.status_code == 400
    error = rest_error(response)
    assert error.reason == "INVALID_REQUEST"
    assert "unit_amount" in error.message


def test_zero_amount_is_refused_with_the_field(rest, auth):
    body = {"currency": "usd", "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": 0}]}
    response = rest.post("/v1/orders", json=body, headers=auth)
    assert response.status_code == 400
    error = rest_error(response)
    assert (error.reason, error.fields) == (
        "AMOUNT_NOT_POSITIVE",
        ["order.line_items[0].unit_amount"],
    )


def test_unknown_currency_is_refused_with_the_field(rest, auth):
    response = rest.post("/v1/orders", json={**ORDER, "currency": "zzz"}, headers=auth)
    assert response.status_code == 400
    assert rest_error(response).fields == ["order.currency"]


def test_refunding_an_unpaid_order_is_refused(rest, auth):
    order = rest.post("/v1/orders", json=ORDER, headers=auth).json()
    response = rest.post("/v1/refunds", json={"order_id": order["id"], "amount": 1}, headers=auth)
    assert response.status_code == 400  # FAILED_PRECONDITION, as Envoy maps it
    error = rest_error(response)
    assert (error.code, error.reason) == ("9", "ORDER_NOT_REFUNDABLE")


def test_missing_scope_is_403_naming_the_scope(rest, channel, db, new_partner, new_merchant):
    from tests.installs.oauth_support import make_world

    world = make_world(channel, db, new_partner, new_merchant)
    token = world.install(scope="orders:read").access_token
    response = rest.post("/v1/orders", json=ORDER, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    error = rest_error(response)
    assert (error.reason, error.metadata["scope"]) == ("SCOPE_MISSING", "orders:write")
