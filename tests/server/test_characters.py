"""NUL characters are refused in every string of every request, gRPC and REST
alike, naming the field (issue 13)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import resources_pb2 as pb
from flint.server import characters
from tests.conftest import bearer
from tests.errors import grpc_error, rest_error


def _refused(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _order(**fields) -> orders_pb.CreateOrderRequest:  # type: ignore[no-untyped-def]
    lines = fields.pop(
        "line_items",
        [pb.LineItem(name="T-shirt", quantity=1, unit_amount=1500)],
    )
    return orders_pb.CreateOrderRequest(order=pb.Order(currency="usd", line_items=lines, **fields))


def test_nul_in_a_nested_repeated_string_is_refused_with_its_path(channel, new_merchant):
    stub = orders_grpc.OrdersServiceStub(channel)
    request = _order(
        line_items=[
            pb.LineItem(name="T-shirt", quantity=1, unit_amount=1500),
            pb.LineItem(name="Mug\x00", quantity=1, unit_amount=900),
        ]
    )
    error = grpc_error(
        _refused(lambda: stub.CreateOrder(request, metadata=bearer(new_merchant.test_key)))
    )
    assert (error.code, error.reason) == ("INVALID_ARGUMENT", "INVALID_CHARACTERS")
    assert error.fields == ["order.line_items[1].name"]
    assert error.metadata["field"] == "order.line_items[1].name"
    # Nothing was stored.
    listed = stub.ListOrders(
        orders_pb.ListOrdersRequest(page_size=100), metadata=bearer(new_merchant.test_key)
    )
    assert listed.orders == []


def test_nul_in_a_map_value_and_in_a_map_key_is_refused(channel, new_merchant):
    stub = orders_grpc.OrdersServiceStub(channel)
    auth = bearer(new_merchant.test_key)
    value = grpc_error(
        _refused(lambda: stub.CreateOrder(_order(metadata={"ref": "a\x00b"}), metadata=auth))
    )
    assert (value.reason, value.fields) == ("INVALID_CHARACTERS", ["order.metadata[ref]"])
    key = grpc_error(
        _refused(lambda: stub.CreateOrder(_order(metadata={"r\x00f": "ok"}), metadata=auth))
    )
    # The key is shown escaped: the error itself carries no NUL.
    assert (key.reason, key.fields) == ("INVALID_CHARACTERS", ["order.metadata[r\\0f]"])


def test_nul_in_a_top_level_field_of_a_read_is_refused(channel, new_merchant):
    stub = orders_grpc.OrdersServiceStub(channel)
    error = grpc_error(
        _refused(
            lambda: stub.GetOrder(
                orders_pb.GetOrderRequest(id="ord_\x00"), metadata=bearer(new_merchant.test_key)
            )
        )
    )
    assert (error.code, error.reason, error.fields) == (
        "INVALID_ARGUMENT",
        "INVALID_CHARACTERS",
        ["id"],
    )


def test_unauthenticated_caller_gets_unauthenticated_not_the_input_check(channel):
    stub = orders_grpc.OrdersServiceStub(channel)
    error = grpc_error(_refused(lambda: stub.GetOrder(orders_pb.GetOrderRequest(id="\x00"))))
    assert error.code == "UNAUTHENTICATED"


def test_nul_over_rest_is_refused_with_400_and_the_field(rest: httpx.Client, new_partner):
    response = rest.post(
        "/v1/apps",
        headers={"authorization": f"Bearer {new_partner.key}"},
        json={
            "name": "Loyalty\u0000Stars",
            "redirect_uris": ["https://app.example.com/callback"],
            "requested_scopes": ["orders:read"],
        },
    )
    assert response.status_code == 400, response.text
    error = rest_error(response)
    assert (error.reason, error.fields) == ("INVALID_CHARACTERS", ["app.name"])


def test_requests_without_zero_bytes_are_not_walked(monkeypatch: pytest.MonkeyPatch):
    walked: list[object] = []
    monkeypatch.setattr(characters, "nul_field", walked.append)
    parse = characters.deserializer(apps_pb.CreateAppRequest)
    request = apps_pb.CreateAppRequest(app=apps_pb.App(name="Loyalty Stars"))
    assert parse(request.SerializeToString()) == request
    assert walked == []


def test_zero_bytes_that_are_not_nul_characters_pass():
    # An empty nested message is encoded with a zero length byte.
    request = orders_pb.CreateOrderRequest(order=pb.Order())
    data = request.SerializeToString()
    assert b"\x00" in data
    assert characters.deserializer(orders_pb.CreateOrderRequest)(data) == request
