"""Commerce objects as the API shows them: protobuf messages, and the JSON
snapshots events carry (the same JSON the REST API returns)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.message import Message

from flint.commerce.models import (
    CheckoutSessionRecord,
    InvoiceRecord,
    OrderNoteRecord,
    OrderRecord,
    PaymentLinkRecord,
    PaymentRecord,
    RefundRecord,
    TimelineRecord,
)
from flint.commerce.v1 import resources_pb2 as pb
from flint.common.config import Settings
from flint.common.errors import invalid_argument
from flint.server.convert import ENVIRONMENT_ENUMS, timestamp

if TYPE_CHECKING:  # orders imports this module
    from flint.commerce.orders import OrderRecordView

ENVIRONMENTS = ENVIRONMENT_ENUMS
ORDER_STATUSES: dict[str, pb.OrderStatus.ValueType] = {
    "open": pb.ORDER_STATUS_OPEN,
    "paid": pb.ORDER_STATUS_PAID,
    "partially_refunded": pb.ORDER_STATUS_PARTIALLY_REFUNDED,
    "refunded": pb.ORDER_STATUS_REFUNDED,
    "canceled": pb.ORDER_STATUS_CANCELED,
}
FULFILLMENT: dict[str, pb.FulfillmentStatus.ValueType] = {
    "unfulfilled": pb.FULFILLMENT_STATUS_UNFULFILLED,
    "fulfilled": pb.FULFILLMENT_STATUS_FULFILLED,
}
SESSION_STATUSES: dict[str, pb.CheckoutSessionStatus.ValueType] = {
    "open": pb.CHECKOUT_SESSION_STATUS_OPEN,
    "complete": pb.CHECKOUT_SESSION_STATUS_COMPLETE,
    "expired": pb.CHECKOUT_SESSION_STATUS_EXPIRED,
}
PAYMENT_STATUSES: dict[str, pb.PaymentStatus.ValueType] = {
    "succeeded": pb.PAYMENT_STATUS_SUCCEEDED,
    "failed": pb.PAYMENT_STATUS_FAILED,
}
REFUND_STATUSES: dict[str, pb.RefundStatus.ValueType] = {
    "pending": pb.REFUND_STATUS_PENDING,
    "succeeded": pb.REFUND_STATUS_SUCCEEDED,
    "failed": pb.REFUND_STATUS_FAILED,
}
REFUND_REASONS: dict[str, pb.RefundReason.ValueType] = {
    "": pb.REFUND_REASON_UNSPECIFIED,
    "duplicate": pb.REFUND_REASON_DUPLICATE,
    "fraudulent": pb.REFUND_REASON_FRAUDULENT,
    "requested_by_customer": pb.REFUND_REASON_REQUESTED_BY_CUSTOMER,
}
INVOICE_STATUSES: dict[str, pb.InvoiceStatus.ValueType] = {
    "draft": pb.INVOICE_STATUS_DRAFT,
    "open": pb.INVOICE_STATUS_OPEN,
    "paid": pb.INVOICE_STATUS_PAID,
    "void": pb.INVOICE_STATUS_VOID,
    "uncollectible": pb.INVOICE_STATUS_UNCOLLECTIBLE,
}
ACTOR_KINDS: dict[str, pb.ActorKind.ValueType] = {
    "merchant": pb.ACTOR_KIND_MERCHANT,
    "app": pb.ACTOR_KIND_APP,
    "buyer": pb.ACTOR_KIND_BUYER,
    "system": pb.ACTOR_KIND_SYSTEM,
}


def enum_name(enums: Mapping[str, int], value: int, fld: str) -> str:
    """The inverse of a map above, for a request's enum field: the domain name of
    `value`, "" for the unspecified 0, and INVALID_ARGUMENT for an unknown value."""
    if value == 0:
        return ""
    for name, number in enums.items():
        if number == value:
            return name
    raise invalid_argument(fld, "UNKNOWN_ENUM_VALUE", f"{value} is not a known value")


@cache
def public_url() -> str:
    return Settings.from_env().public_url


def snapshot(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def line_items_pb(lines: list[dict[str, Any]]) -> list[pb.LineItem]:
    return [
        pb.LineItem(
            name=line["name"],
            quantity=line["quantity"],
            unit_amount=line["unit_amount"],
            sku=line.get("sku", ""),
            amount=line["amount"],
        )
        for line in lines
    ]


def order_pb(
    order: OrderRecord,
    *,
    notes: list[OrderNoteRecord] | None = None,
    sessions: list[CheckoutSessionRecord] | None = None,
    payments: list[PaymentRecord] | None = None,
    invoices: list[InvoiceRecord] | None = None,
    refunds: list[RefundRecord] | None = None,
) -> pb.Order:
    return pb.Order(
        id=order.id,
        environment=ENVIRONMENTS[order.environment],
        status=ORDER_STATUSES[order.status],
        fulfillment_status=FULFILLMENT[order.fulfillment_status],
        currency=order.currency,
        line_items=line_items_pb(order.line_items),
        subtotal=order.subtotal,
        total=order.total,
        amount_paid=order.amount_paid,
        amount_refunded=order.amount_refunded,
        amount_refundable=order.amount_paid - order.amount_refund_reserved,
        customer_email=order.customer_email,
        metadata=order.metadata_,
        notes=[
            pb.OrderNote(
                text=note.text,
                author=pb.Actor(
                    kind=ACTOR_KINDS[note.actor_kind], id=note.actor_id, name=note.actor_name
                ),
                create_time=timestamp(note.created_at),
            )
            for note in notes or []
        ],
        create_time=timestamp(order.created_at),
        update_time=timestamp(order.updated_at),
        version=order.version,
        checkout_sessions=[session_pb(s) for s in sessions or []],
        payments=[payment_pb(p) for p in payments or []],
        invoices=[invoice_pb(i) for i in invoices or []],
        refunds=[refund_pb(r) for r in refunds or []],
        canceled_time=timestamp(order.canceled_at),
        fulfilled_time=timestamp(order.fulfilled_at),
    )


def order_record_pb(view: OrderRecordView) -> pb.Order:
    """The order with every part of its workflow, as GetOrder answers."""
    return order_pb(
        view.order,
        notes=view.notes,
        sessions=view.sessions,
        payments=view.payments,
        invoices=view.invoices,
        refunds=view.refunds,
    )


def session_pb(
    session: CheckoutSessionRecord, order: OrderRecord | None = None
) -> pb.CheckoutSession:
    message = pb.CheckoutSession(
        id=session.id,
        environment=ENVIRONMENTS[session.environment],
        order_id=session.order_id,
        status=SESSION_STATUSES[session.status],
        url=f"{public_url()}/pay/{session.id}",
        success_url=session.success_url,
        cancel_url=session.cancel_url,
        expires_at=timestamp(session.expires_at),
        customer_email=session.customer_email,
        payment_id=session.payment_id,
        create_time=timestamp(session.created_at),
        version=session.version,
        payment_link_id=session.payment_link_id,
    )
    if order is not None:
        message.line_items.extend(line_items_pb(order.line_items))
        message.currency = order.currency
        message.amount_total = order.total
    return message


def payment_pb(payment: PaymentRecord) -> pb.Payment:
    return pb.Payment(
        id=payment.id,
        environment=ENVIRONMENTS[payment.environment],
        order_id=payment.order_id,
        checkout_session_id=payment.checkout_session_id,
        invoice_id=payment.invoice_id,
        amount=payment.amount,
        currency=payment.currency,
        status=PAYMENT_STATUSES[payment.status],
        decline_code=payment.decline_code,
        failure_message=payment.failure_message,
        card_brand=payment.card_brand,
        card_last4=payment.card_last4,
        amount_refunded=payment.amount_refunded,
        create_time=timestamp(payment.created_at),
    )


def refund_pb(refund: RefundRecord) -> pb.Refund:
    return pb.Refund(
        id=refund.id,
        environment=ENVIRONMENTS[refund.environment],
        order_id=refund.order_id,
        payment_id=refund.payment_id,
        amount=refund.amount,
        currency=refund.currency,
        reason=REFUND_REASONS[refund.reason],
        status=REFUND_STATUSES[refund.status],
        failure_reason=refund.failure_reason,
        create_time=timestamp(refund.created_at),
        version=refund.version,
        metadata=refund.metadata_,
    )


def payment_link_pb(link: PaymentLinkRecord) -> pb.PaymentLink:
    return pb.PaymentLink(
        id=link.id,
        environment=ENVIRONMENTS[link.environment],
        line_items=line_items_pb(link.line_items),
        currency=link.currency,
        active=link.active,
        url=f"{public_url()}/l/{link.id}",
        success_url=link.success_url,
        metadata=link.metadata_,
        create_time=timestamp(link.created_at),
        update_time=timestamp(link.updated_at),
        version=link.version,
    )


def invoice_pb(invoice: InvoiceRecord) -> pb.Invoice:
    return pb.Invoice(
        id=invoice.id,
        environment=ENVIRONMENTS[invoice.environment],
        number=invoice.number,
        status=INVOICE_STATUSES[invoice.status],
        customer_email=invoice.customer_email,
        line_items=line_items_pb(invoice.line_items),
        currency=invoice.currency,
        subtotal=invoice.subtotal,
        total=invoice.total,
        amount_paid=invoice.amount_paid,
        due_date=invoice.due_date,
        order_id=invoice.order_id,
        url=f"{public_url()}/i/{invoice.id}" if invoice.status != "draft" else "",
        payment_id=invoice.payment_id,
        metadata=invoice.metadata_,
        create_time=timestamp(invoice.created_at),
        finalize_time=timestamp(invoice.finalized_at),
        paid_time=timestamp(invoice.paid_at),
        version=invoice.version,
    )


def timeline_entry_pb(entry: TimelineRecord) -> pb.TimelineEntry:
    return pb.TimelineEntry(
        kind=pb.TimelineEntryKind.Value(f"TIMELINE_ENTRY_KIND_{entry.kind.upper()}"),
        time=timestamp(entry.created_at),
        actor=pb.Actor(
            kind=ACTOR_KINDS[entry.actor_kind], id=entry.actor_id, name=entry.actor_name
        ),
        object_id=entry.object_id,
        summary=entry.summary,
        details=entry.details,
    )
