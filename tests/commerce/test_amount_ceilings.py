"""Issue 13: every amount a caller sets and every total Flint computes stays
under the platform ceiling (Stripe's: eight digits of minor units, $999,999.99;
nine for three-decimal currencies), refused with AMOUNT_TOO_LARGE and the field,
never stored, crashed on or overflowed. Over gRPC and through Envoy (REST sends
int64 as strings)."""

from __future__ import annotations

import grpc
import pytest

from flint.commerce.v1 import payment_links_service_pb2 as links_pb
from flint.commerce.v1 import resources_pb2 as pb
from flint.common.money import ceiling
from tests.commerce.support import Commerce
from tests.errors import grpc_error, rest_error
from tests.installs.oauth_support import internal_key

INT64_MAX = 2**63 - 1
USD_CEILING = 99_999_999  # $999,999.99


@pytest.fixture
def shop(channel, db, new_merchant) -> Commerce:  # type: ignore[no-untyped-def]
    return Commerce(channel, new_merchant.test_key, internal_key(db))


def _refused(call: object) -> tuple[str, str, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    details = grpc_error(caught.value)
    return details.code, details.reason, details.fields


def test_the_ceiling_follows_the_currency_exponent():
    assert (ceiling("usd"), ceiling("eur"), ceiling("jpy"), ceiling("kwd")) == (
        99_999_999,
        99_999_999,
        99_999_999,
        999_999_999,
    )


def test_an_order_at_the_ceiling_is_accepted(shop: Commerce):
    order = shop.create_order(("Car", 1, USD_CEILING))
    assert order.total == USD_CEILING


@pytest.mark.parametrize(
    "unit_amount", [USD_CEILING + 1, INT64_MAX], ids=["one-cent-over", "int64-max"]
)
def test_a_unit_amount_over_the_ceiling_is_refused(shop: Commerce, unit_amount: int):
    assert _refused(lambda: shop.create_order(("Car", 1, unit_amount))) == (
        "INVALID_ARGUMENT",
        "AMOUNT_TOO_LARGE",
        ["order.line_items[0].unit_amount"],
    )


def test_quantity_times_price_over_the_ceiling_is_refused(shop: Commerce):
    # Each price is fine; the total Flint computes is not.
    assert _refused(lambda: shop.create_order(("Chair", 2, 60_000_000))) == (
        "INVALID_ARGUMENT",
        "AMOUNT_TOO_LARGE",
        ["order.line_items"],
    )


def test_lines_summing_over_the_ceiling_are_refused(shop: Commerce):
    reason = _refused(lambda: shop.create_order(("A", 1, 60_000_000), ("B", 1, 40_000_000)))
    assert reason == ("INVALID_ARGUMENT", "AMOUNT_TOO_LARGE", ["order.line_items"])


def test_zero_decimal_currency_ceiling(shop: Commerce):
    assert shop.create_order(("Kimono", 1, 99_999_999), currency="jpy").total == 99_999_999
    assert _refused(lambda: shop.create_order(("Kimono", 1, 100_000_000), currency="jpy"))[1:] == (
        "AMOUNT_TOO_LARGE",
        ["order.line_items[0].unit_amount"],
    )


def test_three_decimal_currency_ceiling(shop: Commerce):
    assert shop.create_order(("Gold", 1, 999_999_999), currency="kwd").total == 999_999_999
    assert _refused(lambda: shop.create_order(("Gold", 1, 1_000_000_000), currency="kwd"))[1:] == (
        "AMOUNT_TOO_LARGE",
        ["order.line_items[0].unit_amount"],
    )


def test_an_invoice_over_the_ceiling_is_refused(shop: Commerce):
    lines = [pb.LineItem(name="Consulting", quantity=10, unit_amount=10_000_000)]
    assert _refused(lambda: shop.new_invoice(line_items=lines))[1:] == (
        "AMOUNT_TOO_LARGE",
        ["invoice.line_items"],
    )


def test_a_payment_link_over_the_ceiling_is_refused(shop: Commerce):
    request = links_pb.CreatePaymentLinkRequest(
        payment_link=pb.PaymentLink(
            line_items=[pb.LineItem(name="Ebook", quantity=1, unit_amount=INT64_MAX)],
            currency="usd",
            success_url="https://shop.example.com/thanks",
        )
    )
    assert _refused(lambda: shop.links.CreatePaymentLink(request, metadata=shop.auth))[1:] == (
        "AMOUNT_TOO_LARGE",
        ["payment_link.line_items[0].unit_amount"],
    )


def test_a_refund_amount_over_the_ceiling_is_refused(shop: Commerce):
    order = shop.paid_order()
    assert _refused(lambda: shop.refund(order.id, amount=INT64_MAX)) == (
        "INVALID_ARGUMENT",
        "AMOUNT_TOO_LARGE",
        ["refund.amount"],
    )
    # Under the ceiling but over what was paid: the refundable amount refuses it.
    assert _refused(lambda: shop.refund(order.id, amount=USD_CEILING))[1] == (
        "AMOUNT_EXCEEDS_REFUNDABLE"
    )


def test_int64_max_through_the_edge_is_refused_with_the_field(rest, new_merchant):  # type: ignore[no-untyped-def]
    # REST carries int64 as a string: the largest one passes the transcoder and
    # must be refused by the ceiling, not stored.
    body = {
        "currency": "usd",
        "line_items": [{"name": "Mug", "quantity": "1", "unit_amount": str(INT64_MAX)}],
    }
    response = rest.post(
        "/v1/orders", json=body, headers={"Authorization": f"Bearer {new_merchant.test_key}"}
    )
    assert response.status_code == 400, response.text
    error = rest_error(response)
    assert (error.reason, error.fields) == (
        "AMOUNT_TOO_LARGE",
        ["order.line_items[0].unit_amount"],
    )
