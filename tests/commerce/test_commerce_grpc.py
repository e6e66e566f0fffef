"""Commerce over gRPC against the real server: lifecycles, the workflow record,
and every refusal named in the issue."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import inspect, select, text

from flint.commerce.v1 import checkout_service_pb2 as checkout_pb
from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.commerce.v1 import payment_links_service_pb2 as links_pb
from flint.commerce.v1 import refunds_service_pb2 as refunds_pb
from flint.commerce.v1 import resources_pb2 as pb
from flint.common.events import EventRecord
from tests.commerce.support import (
    DECLINED_CARD,
    GOOD_CARD,
    MASTERCARD,
    NO_FUNDS_CARD,
    Commerce,
)
from tests.conftest import bearer
from tests.errors import grpc_error
from tests.installs.oauth_support import internal_key


@pytest.fixture(scope="module")
def internal(db) -> str:
    return internal_key(db)


@pytest.fixture
def shop(channel, new_merchant, internal) -> Commerce:
    return Commerce(channel, new_merchant.test_key, internal)


@pytest.fixture
def live_shop(channel, new_merchant, internal) -> Commerce:
    return Commerce(channel, new_merchant.live_key, internal)


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def kinds(entries: list[pb.TimelineEntry]) -> list[str]:
    return [pb.TimelineEntryKind.Name(e.kind).removeprefix("TIMELINE_ENTRY_KIND_") for e in entries]


# --- orders -----------------------------------------------------------------------------


def test_order_amounts_are_computed_by_the_server(shop: Commerce):
    order = shop.create_order(
        ("Mug", 2, 1250),
        ("Poster", 1, 999),
        customer_email="ann@example.com",
        metadata={"cart": "c_1"},
    )
    assert order.id.startswith("ord_")
    assert [li.amount for li in order.line_items] == [2500, 999]
    assert (order.subtotal, order.total, order.amount_paid, order.amount_refundable) == (
        3499,
        3499,
        0,
        0,
    )
    assert order.status == pb.ORDER_STATUS_OPEN
    assert order.fulfillment_status == pb.FULFILLMENT_STATUS_UNFULFILLED
    assert order.currency == "usd"
    assert order.environment == 1  # test


def test_checkout_pays_the_order_and_the_record_tells_the_whole_story(shop: Commerce):
    order = shop.create_order(customer_email="ann@example.com")
    session = shop.create_session(order.id, cancel_url="https://shop.example.com/cart")
    assert session.url.endswith(f"/pay/{session.id}")
    assert session.amount_total == 3000
    expires = session.expires_at.ToDatetime(tzinfo=UTC)
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24, seconds=5)

    declined = shop.pay_session(session.id, DECLINED_CARD)
    assert (declined.succeeded, declined.decline_code) == (False, "card_declined")
    paid = shop.pay_session(session.id, GOOD_CARD)
    assert paid.succeeded
    assert paid.redirect_url == "https://shop.example.com/thanks"

    record = shop.get(order.id)
    assert record.status == pb.ORDER_STATUS_PAID
    assert (record.amount_paid, record.amount_refundable) == (3000, 3000)
    assert [s.status for s in record.checkout_sessions] == [pb.CHECKOUT_SESSION_STATUS_COMPLETE]
    assert [(p.status, p.decline_code) for p in record.payments] == [
        (pb.PAYMENT_STATUS_FAILED, "card_declined"),
        (pb.PAYMENT_STATUS_SUCCEEDED, ""),
    ]
    assert record.payments[1].card_last4 == "4242"
    assert record.payments[1].card_brand == "visa"

    entries = shop.timeline(order.id)
    assert kinds(entries) == ["CREATED", "CHECKOUT_STARTED", "PAYMENT_FAILED", "PAID"]
    assert entries[2].details["decline_code"] == "card_declined"
    assert entries[2].actor.kind == pb.ACTOR_KIND_BUYER
    assert entries[0].actor.kind == pb.ACTOR_KIND_MERCHANT
    assert entries[3].object_id == record.payments[1].id
    assert "30.00 USD" in entries[3].summary


def test_checkout_session_from_line_items_creates_the_order(shop: Commerce):
    session = shop.sessions.CreateCheckoutSession(
        checkout_pb.CreateCheckoutSessionRequest(
            checkout_session=pb.CheckoutSession(
                line_items=[pb.LineItem(name="Socks", quantity=3, unit_amount=500)],
                currency="EUR",
                success_url="https://shop.example.com/ok",
            )
        ),
        metadata=shop.auth,
    )
    order = shop.get(session.order_id)
    assert (order.total, order.currency) == (1500, "eur")


def test_partial_then_full_refund_and_the_order_follows(shop: Commerce):
    order = shop.paid_order()
    partial = shop.refund(order.id, 1000, reason=pb.REFUND_REASON_REQUESTED_BY_CUSTOMER)
    assert partial.status == pb.REFUND_STATUS_SUCCEEDED
    after_partial = shop.get(order.id)
    assert after_partial.status == pb.ORDER_STATUS_PARTIALLY_REFUNDED
    assert (after_partial.amount_refunded, after_partial.amount_refundable) == (1000, 2000)
    rest = shop.refund(order.id)  # 0 = everything left
    assert rest.amount == 2000
    final = shop.get(order.id)
    assert final.status == pb.ORDER_STATUS_REFUNDED
    assert (final.amount_refunded, final.amount_refundable) == (3000, 0)
    assert final.payments[0].amount_refunded == 3000
    assert kinds(shop.timeline(order.id))[-4:] == [
        "REFUND_REQUESTED",
        "REFUND_SUCCEEDED",
        "REFUND_REQUESTED",
        "REFUND_SUCCEEDED",
    ]


def test_a_failed_refund_gives_the_amount_back(shop: Commerce):
    order = shop.paid_order("4000000000005126")
    refund = shop.refund(order.id, 500)
    assert refund.status == pb.REFUND_STATUS_FAILED
    assert refund.failure_reason
    after = shop.get(order.id)
    assert (after.amount_refunded, after.amount_refundable, after.status) == (
        0,
        3000,
        pb.ORDER_STATUS_PAID,
    )


def test_fulfil_cancel_and_notes(shop: Commerce):
    order = shop.paid_order()
    fulfilled = shop.orders.FulfillOrder(
        orders_pb.FulfillOrderRequest(id=order.id), metadata=shop.auth
    )
    assert fulfilled.fulfillment_status == pb.FULFILLMENT_STATUS_FULFILLED
    noted = shop.orders.AddOrderNote(
        orders_pb.AddOrderNoteRequest(id=order.id, text="Gift wrap please"), metadata=shop.auth
    )
    assert [n.text for n in noted.notes] == ["Gift wrap please"]
    unpaid = shop.create_order()
    canceled = shop.orders.CancelOrder(
        orders_pb.CancelOrderRequest(id=unpaid.id), metadata=shop.auth
    )
    assert canceled.status == pb.ORDER_STATUS_CANCELED
    assert kinds(shop.timeline(order.id))[-2:] == ["FULFILLED", "NOTE_ADDED"]


def test_list_orders_filters(shop: Commerce):
    a = shop.create_order(customer_email="lookup@example.com")
    shop.create_order(customer_email="other@example.com")
    paid = shop.paid_order()
    by_email = shop.orders.ListOrders(
        orders_pb.ListOrdersRequest(customer_email="lookup@example.com"), metadata=shop.auth
    )
    assert [o.id for o in by_email.orders] == [a.id]
    by_status = shop.orders.ListOrders(
        orders_pb.ListOrdersRequest(status=pb.ORDER_STATUS_PAID), metadata=shop.auth
    )
    assert paid.id in [o.id for o in by_status.orders]
    assert a.id not in [o.id for o in by_status.orders]
    future = shop.orders.ListOrders(
        orders_pb.ListOrdersRequest(
            created_after=__import__(
                "google.protobuf.timestamp_pb2"
            ).protobuf.timestamp_pb2.Timestamp(
                seconds=int((datetime.now(UTC) + timedelta(days=1)).timestamp())
            )
        ),
        metadata=shop.auth,
    )
    assert list(future.orders) == []


def test_update_order_with_a_mask(shop: Commerce):
    order = shop.create_order(customer_email="old@example.com")
    updated = shop.orders.UpdateOrder(
        orders_pb.UpdateOrderRequest(
            order=pb.Order(id=order.id, customer_email="new@example.com", metadata={"x": "y"}),
            update_mask=field_mask_pb2.FieldMask(paths=["customer_email"]),
        ),
        metadata=shop.auth,
    )
    assert updated.customer_email == "new@example.com"
    assert dict(updated.metadata) == {}
    assert updated.version == order.version + 1


# --- payment links and invoices ---------------------------------------------------------


def test_payment_link_opens_a_fresh_order_per_visit_and_can_be_deactivated(shop: Commerce):
    link = shop.links.CreatePaymentLink(
        links_pb.CreatePaymentLinkRequest(
            payment_link=pb.PaymentLink(
                line_items=[pb.LineItem(name="Ebook", quantity=1, unit_amount=900)],
                currency="usd",
                success_url="https://shop.example.com/thanks",
            )
        ),
        metadata=shop.auth,
    )
    assert link.active
    assert link.url.endswith(f"/l/{link.id}")
    first = shop.pay.OpenPaymentLink(
        pay_pb.OpenPaymentLinkRequest(id=link.id), metadata=bearer(shop.internal)
    )
    second = shop.pay.OpenPaymentLink(
        pay_pb.OpenPaymentLinkRequest(id=link.id), metadata=bearer(shop.internal)
    )
    assert first.id != second.id
    assert first.amount_total == 900
    assert shop.pay_session(first.id).succeeded
    assert shop.pay_session(second.id).succeeded
    sessions = [
        shop.sessions.GetCheckoutSession(
            checkout_pb.GetCheckoutSessionRequest(id=s.id), metadata=shop.auth
        )
        for s in (first, second)
    ]
    assert sessions[0].order_id != sessions[1].order_id
    assert all(s.payment_link_id == link.id for s in sessions)
    shop.links.UpdatePaymentLink(
        links_pb.UpdatePaymentLinkRequest(
            payment_link=pb.PaymentLink(id=link.id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=shop.auth,
    )
    details = grpc_error(
        refused(
            lambda: shop.pay.OpenPaymentLink(
                pay_pb.OpenPaymentLinkRequest(id=link.id), metadata=bearer(shop.internal)
            )
        )
    )
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "PAYMENT_LINK_INACTIVE")


def test_payment_link_page_reads_the_link_and_opening_with_one_key_opens_one_session(
    shop: Commerce,
):
    link = shop.links.CreatePaymentLink(
        links_pb.CreatePaymentLinkRequest(
            payment_link=pb.PaymentLink(
                line_items=[pb.LineItem(name="Ebook", quantity=2, unit_amount=900)],
                currency="usd",
                success_url="https://shop.example.com/thanks",
            )
        ),
        metadata=shop.auth,
    )
    page = shop.pay.GetPaymentLinkPage(
        pay_pb.GetPaymentLinkPageRequest(id=link.id), metadata=bearer(shop.internal)
    )
    assert (page.id, page.state, page.amount_total) == (
        link.id,
        pay_pb.PAY_PAGE_STATE_PAYABLE,
        1800,
    )
    assert [item.name for item in page.line_items] == ["Ebook"]
    assert page.test_mode
    listed = shop.sessions.ListCheckoutSessions(
        checkout_pb.ListCheckoutSessionsRequest(page_size=100), metadata=shop.auth
    )
    assert not [s for s in listed.checkout_sessions if s.payment_link_id == link.id]
    same_form = [*bearer(shop.internal), ("idempotency-key", f"payment-link:{link.id}:form-1")]
    first = shop.pay.OpenPaymentLink(pay_pb.OpenPaymentLinkRequest(id=link.id), metadata=same_form)
    again = shop.pay.OpenPaymentLink(pay_pb.OpenPaymentLinkRequest(id=link.id), metadata=same_form)
    assert first.id == again.id
    shop.links.UpdatePaymentLink(
        links_pb.UpdatePaymentLinkRequest(
            payment_link=pb.PaymentLink(id=link.id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=shop.auth,
    )
    closed = shop.pay.GetPaymentLinkPage(
        pay_pb.GetPaymentLinkPageRequest(id=link.id), metadata=bearer(shop.internal)
    )
    assert closed.state == pay_pb.PAY_PAGE_STATE_CLOSED
    details = grpc_error(
        refused(
            lambda: shop.pay.GetPaymentLinkPage(
                pay_pb.GetPaymentLinkPageRequest(id="plink_01jzzzzzzzzzzzzzzzzzzzzzzz"),
                metadata=bearer(shop.internal),
            )
        )
    )
    assert details.code == "NOT_FOUND"


def test_invoice_from_draft_to_paid(shop: Commerce):
    order = shop.create_order(("Retainer", 1, 30000))
    invoice = shop.new_invoice(order_id=order.id)
    assert (invoice.status, invoice.number, invoice.url) == (pb.INVOICE_STATUS_DRAFT, "", "")
    edited = shop.invoices.UpdateInvoice(
        invoices_pb.UpdateInvoiceRequest(
            invoice=pb.Invoice(id=invoice.id, due_date="2030-02-28"),
            update_mask=field_mask_pb2.FieldMask(paths=["due_date"]),
        ),
        metadata=shop.auth,
    )
    assert edited.due_date == "2030-02-28"
    final = shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
    )
    assert final.status == pb.INVOICE_STATUS_OPEN
    assert final.number.startswith("INV-")
    assert final.url.endswith(f"/i/{invoice.id}")
    page = shop.pay.GetInvoicePage(
        pay_pb.GetInvoicePageRequest(id=invoice.id), metadata=bearer(shop.internal)
    )
    assert (page.state, page.amount_total, page.invoice_number) == (
        pay_pb.PAY_PAGE_STATE_PAYABLE,
        30000,
        final.number,
    )
    declined = shop.pay_invoice(invoice.id, NO_FUNDS_CARD)
    assert (declined.succeeded, declined.decline_code) == (False, "insufficient_funds")
    paid = shop.pay_invoice(invoice.id)
    assert paid.succeeded
    got = shop.invoices.GetInvoice(invoices_pb.GetInvoiceRequest(id=invoice.id), metadata=shop.auth)
    assert (got.status, got.amount_paid) == (pb.INVOICE_STATUS_PAID, 30000)
    record = shop.get(order.id)
    assert record.status == pb.ORDER_STATUS_PAID
    assert [i.id for i in record.invoices] == [invoice.id]
    assert kinds(shop.timeline(order.id)) == [
        "CREATED",
        "INVOICE_FINALIZED",
        "PAYMENT_FAILED",
        "INVOICE_PAID",
        "PAID",
    ]


def test_voided_and_uncollectible_invoices_each_say_so_on_the_order(shop: Commerce):
    order = shop.create_order(("Retainer", 1, 30000))
    closed = []
    for close in (
        lambda id: shop.invoices.VoidInvoice(
            invoices_pb.VoidInvoiceRequest(id=id), metadata=shop.auth
        ),
        lambda id: shop.invoices.MarkUncollectibleInvoice(
            invoices_pb.MarkUncollectibleInvoiceRequest(id=id), metadata=shop.auth
        ),
    ):
        invoice = shop.new_invoice(order_id=order.id)
        shop.invoices.FinalizeInvoice(
            invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
        )
        closed.append(close(invoice.id))
    assert [i.status for i in closed] == [pb.INVOICE_STATUS_VOID, pb.INVOICE_STATUS_UNCOLLECTIBLE]
    timeline = shop.timeline(order.id)
    assert kinds(timeline) == [
        "CREATED",
        "INVOICE_FINALIZED",
        "INVOICE_VOIDED",
        "INVOICE_FINALIZED",
        "INVOICE_MARKED_UNCOLLECTIBLE",
    ]
    assert [(e.object_id, e.summary) for e in (timeline[2], timeline[4])] == [
        (closed[0].id, f"Invoice {closed[0].number} voided"),
        (closed[1].id, f"Invoice {closed[1].number} marked uncollectible"),
    ]


def test_invoice_numbers_count_up_per_merchant(shop: Commerce):
    numbers = []
    for _ in range(3):
        draft = shop.new_invoice()
        numbers.append(
            shop.invoices.FinalizeInvoice(
                invoices_pb.FinalizeInvoiceRequest(id=draft.id), metadata=shop.auth
            ).number
        )
    assert numbers == ["INV-000001", "INV-000002", "INV-000003"]


# --- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit_amount", "quantity", "reason"),
    [
        (0, 1, "AMOUNT_NOT_POSITIVE"),
        (-100, 1, "AMOUNT_NOT_POSITIVE"),
        (2**62, 3, "AMOUNT_TOO_LARGE"),
        (100, 0, "INVALID_QUANTITY"),
    ],
    ids=["zero-amount", "negative-amount", "int64-overflowing-total", "zero-quantity"],
)
def test_bad_amounts_are_refused(shop: Commerce, unit_amount, quantity, reason):
    details = grpc_error(refused(lambda: shop.create_order(("Thing", quantity, unit_amount))))
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", reason)


@pytest.mark.parametrize(
    "currency", ["xyz", "", "dollars", "DEM"], ids=["unknown", "missing", "word", "withdrawn"]
)
def test_unknown_currency_is_refused(shop: Commerce, currency):
    details = grpc_error(refused(lambda: shop.create_order(currency=currency)))
    assert details.reason in ("UNKNOWN_CURRENCY", "FIELD_REQUIRED")
    assert "order.currency" in details.fields


def test_invoice_currency_must_match_its_order(shop: Commerce):
    order = shop.create_order()
    details = grpc_error(refused(lambda: shop.new_invoice(order_id=order.id, currency="eur")))
    assert (details.reason, details.fields) == ("CURRENCY_MISMATCH", ["invoice.currency"])


def test_too_many_metadata_keys_are_refused(shop: Commerce):
    metadata = {f"k{i}": "v" for i in range(51)}
    details = grpc_error(refused(lambda: shop.create_order(metadata=metadata)))
    assert (details.reason, details.fields) == ("TOO_MANY_METADATA_KEYS", ["order.metadata"])


def test_over_long_metadata_key_is_refused(shop: Commerce):
    details = grpc_error(refused(lambda: shop.create_order(metadata={"k" * 41: "v"})))
    assert details.reason == "INVALID_METADATA_KEY"


def test_refund_over_the_refundable_amount_is_refused(shop: Commerce):
    order = shop.paid_order()
    details = grpc_error(refused(lambda: shop.refund(order.id, 3001)))
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "AMOUNT_EXCEEDS_REFUNDABLE",
        ["refund.amount"],
    )
    shop.refund(order.id, 3000)
    details = grpc_error(refused(lambda: shop.refund(order.id, 1)))
    assert details.reason == "AMOUNT_EXCEEDS_REFUNDABLE"


def test_twenty_concurrent_refunds_never_exceed_the_refundable_total(shop: Commerce):
    order = shop.paid_order()  # 3000 paid
    start = threading.Barrier(20)

    def refund_700() -> str:
        start.wait()
        try:
            shop.refund(order.id, 700)
        except grpc.RpcError as error:
            return grpc_error(error).reason
        return "OK"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda _: refund_700(), range(20)))
    assert outcomes.count("OK") == 4  # 4 × 700 = 2800 ≤ 3000 < 5 × 700
    assert set(outcomes) == {"OK", "AMOUNT_EXCEEDS_REFUNDABLE"}
    final = shop.get(order.id)
    assert (final.amount_refunded, final.amount_refundable) == (2800, 200)
    assert len(final.refunds) == 4


def test_concurrent_submissions_pay_a_session_at_most_once(shop: Commerce):
    order = shop.create_order()
    session = shop.create_session(order.id)
    start = threading.Barrier(10)

    def submit() -> str:
        start.wait()
        try:
            return "PAID" if shop.pay_session(session.id).succeeded else "DECLINED"
        except grpc.RpcError as error:
            return grpc_error(error).reason

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(lambda _: submit(), range(10)))
    assert outcomes.count("PAID") == 1
    assert set(outcomes) <= {"PAID", "PAYMENT_IN_PROGRESS", "CHECKOUT_SESSION_COMPLETE"}
    record = shop.get(order.id)
    assert [p.status for p in record.payments] == [pb.PAYMENT_STATUS_SUCCEEDED]


def test_concurrent_payments_of_an_invoice_with_two_cards_charge_once(shop: Commerce):
    invoice = shop.new_invoice()  # not tied to an order
    shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
    )
    start = threading.Barrier(10)

    def submit(card: str) -> str:
        start.wait()
        try:
            return "PAID" if shop.pay_invoice(invoice.id, card).succeeded else "DECLINED"
        except grpc.RpcError as error:
            return grpc_error(error).reason

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(submit, [GOOD_CARD, MASTERCARD] * 5))
    assert outcomes.count("PAID") == 1
    assert set(outcomes) <= {"PAID", "PAYMENT_IN_PROGRESS", "INVOICE_NOT_OPEN"}
    paid = shop.invoices.GetInvoice(
        invoices_pb.GetInvoiceRequest(id=invoice.id), metadata=shop.auth
    )
    listed = shop.refunds.ListPayments(refunds_pb.ListPaymentsRequest(), metadata=shop.auth)
    charges = [p for p in listed.payments if p.invoice_id == invoice.id]
    assert [(p.status, p.amount, p.order_id) for p in charges] == [
        (pb.PAYMENT_STATUS_SUCCEEDED, 30000, "")
    ]
    assert (paid.status, paid.amount_paid) == (pb.INVOICE_STATUS_PAID, 30000)
    # Paying again is refused for what it is, not as a payment in progress.
    details = grpc_error(refused(lambda: shop.pay_invoice(invoice.id, MASTERCARD)))
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "INVOICE_NOT_OPEN")


def test_paying_a_complete_session_is_refused(shop: Commerce):
    order = shop.paid_order()
    session_id = shop.get(order.id).checkout_sessions[0].id
    details = grpc_error(refused(lambda: shop.pay_session(session_id)))
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "CHECKOUT_SESSION_COMPLETE")


def test_paying_an_expired_session_is_refused(shop: Commerce):
    order = shop.create_order()
    session = shop.create_session(order.id)
    expired = shop.sessions.ExpireCheckoutSession(
        checkout_pb.ExpireCheckoutSessionRequest(id=session.id), metadata=shop.auth
    )
    assert expired.status == pb.CHECKOUT_SESSION_STATUS_EXPIRED
    details = grpc_error(refused(lambda: shop.pay_session(session.id)))
    assert details.reason == "CHECKOUT_SESSION_EXPIRED"


def test_expiry_outside_the_allowed_window_is_refused(shop: Commerce):
    order = shop.create_order()
    from google.protobuf.timestamp_pb2 import Timestamp

    too_soon = Timestamp(seconds=int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()))
    details = grpc_error(refused(lambda: shop.create_session(order.id, expires_at=too_soon)))
    assert (details.reason, details.fields) == ("OUT_OF_RANGE", ["checkout_session.expires_at"])


def test_finalizing_a_non_draft_invoice_is_refused(shop: Commerce):
    invoice = shop.new_invoice()
    shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
    )
    details = grpc_error(
        refused(
            lambda: shop.invoices.FinalizeInvoice(
                invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
            )
        )
    )
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "INVOICE_NOT_DRAFT")


def test_invoices_listed_by_status_page_within_that_status(shop: Commerce):
    drafts = [shop.new_invoice() for _ in range(2)]
    shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=shop.new_invoice().id), metadata=shop.auth
    )

    def page(status: int, token: str = "") -> invoices_pb.ListInvoicesResponse:
        request = invoices_pb.ListInvoicesRequest(status=status, page_size=1, page_token=token)
        return shop.invoices.ListInvoices(request, metadata=shop.auth)

    first = page(pb.INVOICE_STATUS_DRAFT)
    second = page(pb.INVOICE_STATUS_DRAFT, first.next_page_token)
    assert [i.id for i in (*first.invoices, *second.invoices)] == [d.id for d in drafts[::-1]]
    assert second.next_page_token == ""
    details = grpc_error(refused(lambda: page(pb.INVOICE_STATUS_OPEN, first.next_page_token)))
    assert details.reason == "INVALID_PAGE_TOKEN"


def test_voiding_a_paid_invoice_is_refused(shop: Commerce):
    invoice = shop.new_invoice()
    shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
    )
    assert shop.pay_invoice(invoice.id).succeeded
    details = grpc_error(
        refused(
            lambda: shop.invoices.VoidInvoice(
                invoices_pb.VoidInvoiceRequest(id=invoice.id), metadata=shop.auth
            )
        )
    )
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "INVOICE_NOT_OPEN")


def test_canceling_a_paid_order_is_refused(shop: Commerce):
    order = shop.paid_order()
    details = grpc_error(
        refused(
            lambda: shop.orders.CancelOrder(
                orders_pb.CancelOrderRequest(id=order.id), metadata=shop.auth
            )
        )
    )
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "ORDER_NOT_CANCELABLE")


def test_objects_of_another_merchant_are_not_found(
    channel, shop: Commerce, accounts_stub, admin_key, internal
):
    from flint.accounts.v1 import accounts_service_pb2 as accounts_pb

    other = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            merchant=accounts_pb.Merchant(
                name="Other", email=f"o-{datetime.now(UTC).timestamp()}@example.com"
            ),
            password="correct horse battery",
        ),
        metadata=bearer(admin_key),
    )
    other_shop = Commerce(channel, other.secret_keys[0].secret, internal)
    order = shop.paid_order()
    for call in (
        lambda: other_shop.get(order.id),
        lambda: other_shop.refund(order.id, 100),
        lambda: other_shop.timeline(order.id),
        lambda: other_shop.create_session(order.id),
    ):
        assert grpc_error(refused(call)).code == "NOT_FOUND"


def test_objects_of_the_other_environment_are_not_found(shop: Commerce, live_shop: Commerce):
    test_order = shop.paid_order()
    live_order = live_shop.create_order()
    assert live_order.environment == 2
    assert grpc_error(refused(lambda: live_shop.get(test_order.id))).code == "NOT_FOUND"
    assert grpc_error(refused(lambda: shop.get(live_order.id))).code == "NOT_FOUND"
    assert grpc_error(refused(lambda: live_shop.refund(test_order.id))).code == "NOT_FOUND"
    listed = live_shop.orders.ListOrders(
        orders_pb.ListOrdersRequest(page_size=100), metadata=live_shop.auth
    )
    assert test_order.id not in [o.id for o in listed.orders]


@pytest.mark.parametrize(
    ("number", "exp_year", "field", "reason"),
    [
        ("4242424242424241", 2030, "card.number", "INVALID_CARD_NUMBER"),
        ("4242", 2030, "card.number", "INVALID_CARD_NUMBER"),
        ("4242-4242-4242-4242", 2030, "card.number", "INVALID_CARD_NUMBER"),
        (GOOD_CARD, 2020, "card.exp_year", "CARD_EXPIRED"),
    ],
    ids=["luhn", "too-short", "not-digits", "past-expiry"],
)
def test_bad_cards_are_refused(shop: Commerce, number, exp_year, field, reason):
    order = shop.create_order()
    session = shop.create_session(order.id)
    details = grpc_error(
        refused(
            lambda: shop.pay.PayCheckoutSession(
                pay_pb.PayCheckoutSessionRequest(
                    id=session.id,
                    card=pay_pb.CardDetails(
                        number=number, exp_month=1, exp_year=exp_year, cvc="123"
                    ),
                ),
                metadata=bearer(shop.internal),
            )
        )
    )
    assert (details.code, details.reason, details.fields) == ("INVALID_ARGUMENT", reason, [field])
    # The refusal did not touch the session.
    assert shop.pay_session(session.id).succeeded


def test_no_card_number_or_cvc_is_stored(shop: Commerce, db):
    order = shop.create_order()
    session = shop.create_session(order.id)
    shop.pay.PayCheckoutSession(
        pay_pb.PayCheckoutSessionRequest(
            id=session.id,
            card=pay_pb.CardDetails(
                number="5555555555554444", exp_month=7, exp_year=2031, cvc="9371"
            ),
        ),
        metadata=bearer(shop.internal),
    )
    with db.engine.connect() as connection:
        for table in inspect(db.engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                dumped = " ".join(str(v) for v in row)
                assert "5555555555554444" not in dumped, table
    # Only the brand and last four digits are kept: no column holds the CVC.
    columns = {c["name"] for c in inspect(db.engine).get_columns("payments")}
    assert not {name for name in columns if "cvc" in name or "number" in name}
    record = shop.get(order.id)
    assert (record.payments[0].card_brand, record.payments[0].card_last4) == ("mastercard", "4444")


def test_every_change_writes_its_event(shop: Commerce, db):
    order = shop.paid_order()
    shop.refund(order.id, 500)
    with db.read() as session:
        types = [
            e.type
            for e in session.scalars(
                select(EventRecord)
                .where(EventRecord.object_id == order.id)
                .order_by(EventRecord.object_version)
            )
        ]
    assert types == ["order.created", "order.paid", "order.partially_refunded"]


def test_list_refunds_and_payments_by_order(shop: Commerce):
    order = shop.paid_order()
    shop.refund(order.id, 100)
    refunds = shop.refunds.ListRefunds(
        refunds_pb.ListRefundsRequest(order_id=order.id), metadata=shop.auth
    )
    payments = shop.refunds.ListPayments(
        refunds_pb.ListPaymentsRequest(order_id=order.id), metadata=shop.auth
    )
    assert [r.amount for r in refunds.refunds] == [100]
    assert [p.amount_refunded for p in payments.payments] == [100]


def test_order_filtered_lists_page_within_their_own_order(shop: Commerce):
    first, second = shop.paid_order(), shop.paid_order()
    for order in (first, second):
        shop.refund(order.id, 100)
        shop.refund(order.id, 200)

    def refunds_page(order_id: str, token: str = "") -> refunds_pb.ListRefundsResponse:
        request = refunds_pb.ListRefundsRequest(order_id=order_id, page_size=1, page_token=token)
        return shop.refunds.ListRefunds(request, metadata=shop.auth)

    newest = refunds_page(first.id)
    oldest = refunds_page(first.id, newest.next_page_token)
    assert [r.amount for r in (*newest.refunds, *oldest.refunds)] == [200, 100]
    assert {r.order_id for r in (*newest.refunds, *oldest.refunds)} == {first.id}
    everything = shop.refunds.ListRefunds(refunds_pb.ListRefundsRequest(), metadata=shop.auth)
    assert {r.order_id for r in everything.refunds} == {first.id, second.id}
    sessions = shop.sessions.ListCheckoutSessions(
        checkout_pb.ListCheckoutSessionsRequest(order_id=second.id), metadata=shop.auth
    )
    assert [s.order_id for s in sessions.checkout_sessions] == [second.id]

    # A token belongs to one list and one order: not another order's, nor payments'.
    for call in (
        lambda: refunds_page(second.id, newest.next_page_token),
        lambda: shop.refunds.ListPayments(
            refunds_pb.ListPaymentsRequest(order_id=first.id, page_token=newest.next_page_token),
            metadata=shop.auth,
        ),
    ):
        assert grpc_error(refused(call)).reason == "INVALID_PAGE_TOKEN"


def test_the_expiry_sweep_expires_sessions_past_their_time(shop: Commerce, db):
    from sqlalchemy import update

    from flint.commerce import checkout
    from flint.commerce.models import CheckoutSessionRecord

    order = shop.create_order()
    session = shop.create_session(order.id)
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(CheckoutSessionRecord)
            .where(CheckoutSessionRecord.id == session.id)
            .values(expires_at=uow.now - timedelta(seconds=1))
        )
        uow.commit()
    assert checkout.expire_due_sessions(db).done >= 1
    swept = shop.sessions.GetCheckoutSession(
        checkout_pb.GetCheckoutSessionRequest(id=session.id), metadata=shop.auth
    )
    assert swept.status == pb.CHECKOUT_SESSION_STATUS_EXPIRED
    assert kinds(shop.timeline(order.id))[-1] == "CHECKOUT_EXPIRED"
    assert shop.timeline(order.id)[-1].actor.kind == pb.ACTOR_KIND_SYSTEM


# --- an order is paid once, whichever way -----------------------------------------------


def open_invoice_of(shop: Commerce, order: pb.Order) -> pb.Invoice:
    """A finalized invoice billing `order` in full."""
    invoice = shop.new_invoice(
        order_id=order.id,
        line_items=[pb.LineItem(name="Order", quantity=1, unit_amount=order.total)],
    )
    return shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
    )


def test_the_invoice_of_an_order_paid_at_checkout_cannot_be_paid_again(shop: Commerce):
    order = shop.create_order()
    invoice = open_invoice_of(shop, order)
    assert shop.pay_session(shop.create_session(order.id).id).succeeded
    page = shop.pay.GetInvoicePage(
        pay_pb.GetInvoicePageRequest(id=invoice.id), metadata=bearer(shop.internal)
    )
    assert page.state == pay_pb.PAY_PAGE_STATE_CLOSED
    details = grpc_error(refused(lambda: shop.pay_invoice(invoice.id)))
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "ORDER_NOT_PAYABLE")
    record = shop.get(order.id)
    assert [(p.status, p.checkout_session_id != "") for p in record.payments] == [
        (pb.PAYMENT_STATUS_SUCCEEDED, True)
    ]
    assert (record.amount_paid, record.amount_refundable) == (3000, 3000)


def test_an_order_paid_at_once_by_its_checkout_and_its_invoice_is_charged_once(shop: Commerce):
    order = shop.create_order()
    invoice = open_invoice_of(shop, order)
    session = shop.create_session(order.id)
    start = threading.Barrier(10)

    def submit(pay: Callable[[], pay_pb.PayResult]) -> str:
        start.wait()
        try:
            return "PAID" if pay().succeeded else "DECLINED"
        except grpc.RpcError as error:
            return grpc_error(error).reason

    payers = [
        lambda: shop.pay_session(session.id),
        lambda: shop.pay_invoice(invoice.id),
    ] * 5
    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(submit, payers))
    assert outcomes.count("PAID") == 1, outcomes
    assert set(outcomes) <= {
        "PAID",
        "PAYMENT_IN_PROGRESS",
        "ORDER_NOT_PAYABLE",
        "CHECKOUT_SESSION_COMPLETE",
        "INVOICE_NOT_OPEN",
    }, outcomes
    record = shop.get(order.id)
    assert [p.status for p in record.payments] == [pb.PAYMENT_STATUS_SUCCEEDED]
    assert (record.status, record.amount_paid) == (pb.ORDER_STATUS_PAID, order.total)


def test_the_invoice_of_a_canceled_order_cannot_be_paid(shop: Commerce):
    order = shop.create_order()
    invoice = open_invoice_of(shop, order)
    shop.orders.CancelOrder(orders_pb.CancelOrderRequest(id=order.id), metadata=shop.auth)
    details = grpc_error(refused(lambda: shop.pay_invoice(invoice.id)))
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "ORDER_NOT_PAYABLE")
    assert list(shop.get(order.id).payments) == []


def test_an_order_whose_invoice_is_being_paid_cannot_be_canceled(shop: Commerce, db):
    from sqlalchemy import update

    from flint.commerce.models import InvoiceRecord

    order = shop.create_order()
    invoice = open_invoice_of(shop, order)
    with db.unit_of_work() as uow:  # a buyer's card is being charged for the invoice
        uow.session.execute(
            update(InvoiceRecord)
            .where(InvoiceRecord.id == invoice.id)
            .values(attempt_id="att_x", attempt_until=uow.now + timedelta(seconds=60))
        )
        uow.commit()
    details = grpc_error(
        refused(
            lambda: shop.orders.CancelOrder(
                orders_pb.CancelOrderRequest(id=order.id), metadata=shop.auth
            )
        )
    )
    assert (details.code, details.reason) == ("ABORTED", "PAYMENT_IN_PROGRESS")
    assert shop.get(order.id).status == pb.ORDER_STATUS_OPEN


@pytest.mark.parametrize("unit_amount", [100, 30000], ids=["less", "more"])
def test_an_invoice_must_bill_its_order_total(shop: Commerce, unit_amount: int):
    order = shop.create_order()  # 3000
    lines = [pb.LineItem(name="Order", quantity=1, unit_amount=unit_amount)]
    details = grpc_error(refused(lambda: shop.new_invoice(order_id=order.id, line_items=lines)))
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "AMOUNT_MISMATCH",
        ["invoice.line_items"],
    )
    # Nor can a draft's lines be changed away from the order's total.
    draft = shop.new_invoice(
        order_id=order.id, line_items=[pb.LineItem(name="Order", quantity=1, unit_amount=3000)]
    )
    details = grpc_error(
        refused(
            lambda: shop.invoices.UpdateInvoice(
                invoices_pb.UpdateInvoiceRequest(
                    invoice=pb.Invoice(id=draft.id, line_items=lines),
                    update_mask=field_mask_pb2.FieldMask(paths=["line_items"]),
                ),
                metadata=shop.auth,
            )
        )
    )
    assert (details.reason, details.fields) == ("AMOUNT_MISMATCH", ["invoice.line_items"])


@pytest.mark.parametrize("due_date", ["2030-W05-1", "2030-1-31", "30-01-2030"])
def test_a_due_date_not_written_yyyy_mm_dd_is_refused(shop: Commerce, due_date: str):
    details = grpc_error(refused(lambda: shop.new_invoice(due_date=due_date)))
    assert (details.reason, details.fields) == ("INVALID_DATE", ["invoice.due_date"])


# --- updates that would change nothing --------------------------------------------------


def new_link(shop: Commerce) -> pb.PaymentLink:
    return shop.links.CreatePaymentLink(
        links_pb.CreatePaymentLinkRequest(
            payment_link=pb.PaymentLink(
                line_items=[pb.LineItem(name="Ebook", quantity=1, unit_amount=900)],
                currency="usd",
                success_url="https://shop.example.com/thanks",
            )
        ),
        metadata=shop.auth,
    )


def test_a_payment_link_is_reactivated_by_active_true_without_a_mask(shop: Commerce):
    link = new_link(shop)
    shop.links.UpdatePaymentLink(
        links_pb.UpdatePaymentLinkRequest(
            payment_link=pb.PaymentLink(id=link.id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=shop.auth,
    )
    again = shop.links.UpdatePaymentLink(
        links_pb.UpdatePaymentLinkRequest(payment_link=pb.PaymentLink(id=link.id, active=True)),
        metadata=shop.auth,
    )
    assert again.active


@dataclass(frozen=True)
class Updatable:
    """One object of a kind with an Update RPC: how to update its metadata (with
    the given mask paths) and read it back."""

    target: Any
    update: Callable[[dict[str, str], list[str]], object]
    reread: Callable[[], Any]


def updatable(shop: Commerce, kind: str) -> Updatable:
    def mask(paths: list[str]) -> field_mask_pb2.FieldMask:
        return field_mask_pb2.FieldMask(paths=paths)

    if kind == "order":
        order = shop.create_order()
        return Updatable(
            order,
            lambda metadata, paths: shop.orders.UpdateOrder(
                orders_pb.UpdateOrderRequest(
                    order=pb.Order(id=order.id, metadata=metadata), update_mask=mask(paths)
                ),
                metadata=shop.auth,
            ),
            lambda: shop.get(order.id),
        )
    if kind == "invoice":
        invoice = shop.new_invoice()
        return Updatable(
            invoice,
            lambda metadata, paths: shop.invoices.UpdateInvoice(
                invoices_pb.UpdateInvoiceRequest(
                    invoice=pb.Invoice(id=invoice.id, metadata=metadata), update_mask=mask(paths)
                ),
                metadata=shop.auth,
            ),
            lambda: shop.invoices.GetInvoice(
                invoices_pb.GetInvoiceRequest(id=invoice.id), metadata=shop.auth
            ),
        )
    link = new_link(shop)
    return Updatable(
        link,
        lambda metadata, paths: shop.links.UpdatePaymentLink(
            links_pb.UpdatePaymentLinkRequest(
                payment_link=pb.PaymentLink(id=link.id, metadata=metadata), update_mask=mask(paths)
            ),
            metadata=shop.auth,
        ),
        lambda: shop.links.GetPaymentLink(
            links_pb.GetPaymentLinkRequest(id=link.id), metadata=shop.auth
        ),
    )


@pytest.mark.parametrize("kind", ["order", "invoice", "payment_link"])
def test_an_unknown_update_mask_path_is_refused_and_changes_nothing(shop: Commerce, kind: str):
    subject = updatable(shop, kind)
    details = grpc_error(refused(lambda: subject.update({"x": "y"}, ["metadata", "total"])))
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "UNKNOWN_FIELD_MASK_PATH",
        ["update_mask.paths[1]"],
    )
    reread = subject.reread()
    assert (dict(reread.metadata), reread.version) == ({}, subject.target.version)


@pytest.mark.parametrize("kind", ["order", "invoice", "payment_link"])
def test_an_update_without_a_mask_that_sets_nothing_is_refused(shop: Commerce, kind: str):
    # `active: false` cannot be told from "not given" without a mask: deactivating
    # that way must not answer as if it had worked.
    subject = updatable(shop, kind)
    details = grpc_error(refused(lambda: subject.update({}, [])))
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "FIELD_REQUIRED",
        ["update_mask"],
    )
    assert subject.reread().version == subject.target.version
    if kind == "order":
        assert kinds(shop.timeline(subject.target.id)) == ["CREATED"]
