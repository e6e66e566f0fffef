"""Buyers paying: hosted checkout sessions and invoices.

A payment is three steps: claim the session (or invoice) in a short
transaction, so concurrent submissions cannot both charge; charge the card with
no transaction open (a real acquirer is a network call); record the outcome in a
second transaction. A decline leaves the session open for another try."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from flint.accounts.models import MerchantRecord
from flint.commerce import checkout, orders, presenter, timeline
from flint.commerce.cards import parse_card
from flint.commerce.context import BUYER, Tenant
from flint.commerce.events import emit
from flint.commerce.models import (
    CheckoutSessionRecord,
    InvoiceRecord,
    OrderRecord,
    PaymentRecord,
)
from flint.commerce.processor import Card, ChargeResult, Processor
from flint.common.db import Database, UnitOfWork
from flint.common.errors import Code, FlintError, not_found
from flint.common.ids import new_id
from flint.common.money import display

ATTEMPT_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class CardInput:
    number: str
    exp_month: int
    exp_year: int
    cvc: str


@dataclass(frozen=True)
class PayOutcome:
    succeeded: bool
    payment_id: str
    decline_code: str = ""
    message: str = ""
    redirect_url: str = ""


@dataclass(frozen=True)
class PayPage:
    id: str
    state: str  # payable, paid, expired, closed
    merchant_name: str
    line_items: list[dict[str, Any]]
    currency: str
    amount_total: int
    test_mode: bool
    success_url: str = ""
    cancel_url: str = ""
    invoice_number: str = ""
    due_date: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _merchant_name(session: Session, merchant_id: str) -> str:
    return session.scalar(select(MerchantRecord.name).where(MerchantRecord.id == merchant_id)) or ""


# --- checkout sessions -------------------------------------------------------------------


def _session_by_id(session: Session, session_id: str) -> CheckoutSessionRecord:
    # The id in the URL is the buyer's only credential.
    record = session.get(CheckoutSessionRecord, session_id)
    if record is None:
        raise not_found("checkout_session", session_id)
    return record


def checkout_page(session: Session, session_id: str, now: datetime) -> PayPage:
    record = _session_by_id(session, session_id)
    tenant = Tenant(record.merchant_id, record.environment)
    order = orders.load_order(session, tenant, record.order_id)
    if record.status == "complete":
        state = "paid"
    elif record.status == "expired" or record.expires_at <= now:
        state = "expired"
    elif order.status != "open":
        state = "closed"
    else:
        state = "payable"
    return PayPage(
        id=record.id,
        state=state,
        merchant_name=_merchant_name(session, record.merchant_id),
        line_items=order.line_items,
        currency=order.currency,
        amount_total=order.total,
        test_mode=record.environment == "test",
        success_url=record.success_url,
        cancel_url=record.cancel_url,
    )


def pay_checkout_session(
    db: Database, processor: Processor, session_id: str, card_input: CardInput
) -> PayOutcome:
    now = db.clock()
    card = parse_card(
        card_input.number, card_input.exp_month, card_input.exp_year, card_input.cvc, now
    )
    attempt = new_id("att")
    with db.unit_of_work() as uow:
        record = _session_by_id(uow.session, session_id)
        tenant = Tenant(record.merchant_id, record.environment)
        claimed = uow.session.execute(
            update(CheckoutSessionRecord)
            .where(
                CheckoutSessionRecord.id == session_id,
                CheckoutSessionRecord.status == "open",
                CheckoutSessionRecord.expires_at > uow.now,
                or_(
                    CheckoutSessionRecord.attempt_until.is_(None),
                    CheckoutSessionRecord.attempt_until <= uow.now,
                ),
            )
            .values(attempt_id=attempt, attempt_until=uow.now + ATTEMPT_LEASE)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            uow.session.refresh(record)
            checkout.check_payable(record, uow.now)
            raise FlintError(
                Code.ABORTED, "PAYMENT_IN_PROGRESS", "A payment of this session is in progress"
            )
        order = orders.load_order(uow.session, tenant, record.order_id)
        if order.status != "open":
            raise FlintError(
                Code.FAILED_PRECONDITION, "ORDER_NOT_PAYABLE", f"The order is {order.status}"
            )
        amount, currency = order.total, order.currency
        uow.commit()
    result = processor.charge(
        amount=amount, currency=currency, card=card, test_mode=tenant.environment == "test"
    )
    with db.unit_of_work() as uow:
        record = checkout.load_session(uow.session, tenant, session_id, lock=True)
        order = orders.load_order(uow.session, tenant, record.order_id, lock=True)
        payment = _record_payment(uow, tenant, order, card, result, session_id=record.id)
        record.attempt_id, record.attempt_until = "", None
        if result.succeeded:
            record.status = "complete"
            record.payment_id = payment.id
            record.version += 1
            record.updated_at = uow.now
            _mark_order_paid(uow, tenant, order, payment)
            checkout.emit_session(uow, tenant, record, "checkout.session.completed")
        uow.commit()
    return PayOutcome(
        succeeded=result.succeeded,
        payment_id=payment.id,
        decline_code=result.decline_code,
        message=result.message,
        redirect_url=record.success_url if result.succeeded else "",
    )


def _record_payment(
    uow: UnitOfWork,
    tenant: Tenant,
    order: OrderRecord,
    card: Card,
    result: ChargeResult,
    *,
    session_id: str = "",
    invoice_id: str = "",
    amount: int | None = None,
) -> PaymentRecord:
    payment = PaymentRecord(
        id=new_id("py"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        order_id=order.id,
        checkout_session_id=session_id,
        invoice_id=invoice_id,
        amount=order.total if amount is None else amount,
        currency=order.currency,
        status="succeeded" if result.succeeded else "failed",
        decline_code=result.decline_code,
        failure_message=result.message,
        card_brand=card.brand,
        card_last4=card.last4,
        processor_reference=result.reference,
        amount_refunded=0,
        created_at=uow.now,
    )
    uow.session.add(payment)
    shown = display(payment.amount, payment.currency)
    if result.succeeded:
        emit(
            uow,
            tenant,
            "payment.succeeded",
            object_type="payment",
            object_id=payment.id,
            version=1,
            message=presenter.payment_pb(payment),
        )
    else:
        timeline.add_entry(
            uow,
            tenant,
            order.id,
            "payment_failed",
            BUYER,
            f"Payment of {shown} failed: {result.decline_code}",
            object_id=payment.id,
            details={"decline_code": result.decline_code, "amount": str(payment.amount)},
        )
        emit(
            uow,
            tenant,
            "payment.failed",
            object_type="payment",
            object_id=payment.id,
            version=1,
            message=presenter.payment_pb(payment),
        )
    return payment


def _mark_order_paid(
    uow: UnitOfWork, tenant: Tenant, order: OrderRecord, payment: PaymentRecord
) -> None:
    order.status = "paid"
    order.amount_paid = payment.amount
    orders.touch(order, uow.now)
    timeline.add_entry(
        uow,
        tenant,
        order.id,
        "paid",
        BUYER,
        f"Paid {display(payment.amount, payment.currency)} by {payment.card_brand} "
        f"•••• {payment.card_last4}",
        object_id=payment.id,
        details={"amount": str(payment.amount), "card_brand": payment.card_brand},
    )
    orders.emit_order(uow, tenant, order, "order.paid")


# --- invoices ---------------------------------------------------------------------------------


def _invoice_by_id(session: Session, invoice_id: str, *, lock: bool = False) -> InvoiceRecord:
    invoice = session.get(InvoiceRecord, invoice_id, with_for_update=lock)
    if invoice is None or invoice.status == "draft":
        # Drafts are not public yet.
        raise not_found("invoice", invoice_id)
    return invoice


def invoice_page(session: Session, invoice_id: str) -> PayPage:
    invoice = _invoice_by_id(session, invoice_id)
    state = {"open": "payable", "paid": "paid"}.get(invoice.status, "closed")
    return PayPage(
        id=invoice.id,
        state=state,
        merchant_name=_merchant_name(session, invoice.merchant_id),
        line_items=invoice.line_items,
        currency=invoice.currency,
        amount_total=invoice.total,
        test_mode=invoice.environment == "test",
        invoice_number=invoice.number,
        due_date=invoice.due_date,
    )


def pay_invoice(
    db: Database,
    processor: Processor,
    invoice_id: str,
    card_input: CardInput,
    on_paid: Callable[[UnitOfWork, Tenant, InvoiceRecord, PaymentRecord], None],
) -> PayOutcome:
    """`on_paid` finishes the invoice's side in the recording transaction."""
    now = db.clock()
    card = parse_card(
        card_input.number, card_input.exp_month, card_input.exp_year, card_input.cvc, now
    )
    attempt = new_id("att")
    with db.unit_of_work() as uow:
        invoice = _invoice_by_id(uow.session, invoice_id)
        tenant = Tenant(invoice.merchant_id, invoice.environment)
        claimed = uow.session.execute(
            update(InvoiceRecord)
            .where(
                InvoiceRecord.id == invoice_id,
                InvoiceRecord.status == "open",
                or_(
                    InvoiceRecord.attempt_until.is_(None),
                    InvoiceRecord.attempt_until <= uow.now,
                ),
            )
            .values(attempt_id=attempt, attempt_until=uow.now + ATTEMPT_LEASE)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            uow.session.refresh(invoice)
            if invoice.status != "open":
                raise FlintError(
                    Code.FAILED_PRECONDITION,
                    "INVOICE_NOT_OPEN",
                    f"The invoice is {invoice.status}",
                    metadata={"status": invoice.status},
                )
            raise FlintError(
                Code.ABORTED, "PAYMENT_IN_PROGRESS", "A payment of this invoice is in progress"
            )
        amount, currency = invoice.total, invoice.currency
        uow.commit()
    result = processor.charge(
        amount=amount, currency=currency, card=card, test_mode=tenant.environment == "test"
    )
    with db.unit_of_work() as uow:
        invoice = _invoice_by_id(uow.session, invoice_id, lock=True)
        order = (
            orders.load_order(uow.session, tenant, invoice.order_id, lock=True)
            if invoice.order_id
            else None
        )
        invoice.attempt_id, invoice.attempt_until = "", None
        payment = _record_invoice_payment(uow, tenant, invoice, order, card, result)
        if result.succeeded:
            on_paid(uow, tenant, invoice, payment)
            if order is not None and order.status == "open":
                _mark_order_paid(uow, tenant, order, payment)
        uow.commit()
    return PayOutcome(
        succeeded=result.succeeded,
        payment_id=payment.id,
        decline_code=result.decline_code,
        message=result.message,
    )


def _record_invoice_payment(
    uow: UnitOfWork,
    tenant: Tenant,
    invoice: InvoiceRecord,
    order: OrderRecord | None,
    card: Card,
    result: ChargeResult,
) -> PaymentRecord:
    if order is not None:
        return _record_payment(
            uow, tenant, order, card, result, invoice_id=invoice.id, amount=invoice.total
        )
    payment = PaymentRecord(
        id=new_id("py"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        order_id="",
        checkout_session_id="",
        invoice_id=invoice.id,
        amount=invoice.total,
        currency=invoice.currency,
        status="succeeded" if result.succeeded else "failed",
        decline_code=result.decline_code,
        failure_message=result.message,
        card_brand=card.brand,
        card_last4=card.last4,
        processor_reference=result.reference,
        amount_refunded=0,
        created_at=uow.now,
    )
    uow.session.add(payment)
    emit(
        uow,
        tenant,
        f"payment.{payment.status}",
        object_type="payment",
        object_id=payment.id,
        version=1,
        message=presenter.payment_pb(payment),
    )
    return payment
