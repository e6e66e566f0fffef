"""Buyers paying: hosted checkout sessions and invoices.

Both are one workflow (`_collect`) in three steps: claim the session (or
invoice) in a short transaction, so concurrent submissions cannot both charge;
charge the card with no transaction open (a real acquirer is a network call);
settle the outcome in a second transaction. A decline leaves the session (or
invoice) open for another try."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.accounts.models import MerchantRecord
from flint.commerce import attempts, checkout, orders, presenter, timeline
from flint.commerce.cards import parse_card
from flint.commerce.context import BUYER, Tenant
from flint.commerce.events import emit
from flint.commerce.lines import total_of
from flint.commerce.models import (
    CheckoutSessionRecord,
    InvoiceRecord,
    OrderRecord,
    PaymentLinkRecord,
    PaymentRecord,
)
from flint.commerce.processor import Card, ChargeResult, Processor, refuse_unless_settles
from flint.common.db import Database, UnitOfWork
from flint.common.errors import Code, FlintError, not_found
from flint.common.ids import new_id
from flint.common.money import display


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


def offer(page: PayPage, processor: Processor) -> PayPage:
    """The page a buyer may pay on, if `processor` can settle its money: a live
    page that is still payable is refused instead of showing a card form that
    could only fail (creating live orders, sessions and invoices stays allowed:
    a merchant can set up before its acquirer is, and no money moves)."""
    if page.state == "payable":
        refuse_unless_settles(processor.settles_live, "test" if page.test_mode else "live")
    return page


def _merchant_name(session: Session, merchant_id: str) -> str:
    return session.scalar(select(MerchantRecord.name).where(MerchantRecord.id == merchant_id)) or ""


# --- the payment workflow -------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    """What a claim lets the charge take: whose money, and how much."""

    id: str  # of the session or invoice
    tenant: Tenant
    amount: int
    currency: str
    order_id: str  # "" for an invoice of no order


def _collect(
    db: Database,
    processor: Processor,
    object_id: str,
    card_input: CardInput,
    claim: Callable[[UnitOfWork, str, str], _Claimed],
    settle: Callable[[UnitOfWork, _Claimed, Card, ChargeResult], PayOutcome],
) -> PayOutcome:
    """Claim (committed), charge with no transaction open, settle (committed).
    `claim` gets the object's id and the attempt id to hold; `settle` releases it."""
    card = parse_card(
        card_input.number, card_input.exp_month, card_input.exp_year, card_input.cvc, db.clock()
    )
    with db.unit_of_work() as uow:
        claimed = claim(uow, object_id, new_id("att"))
        # Refused before the claim commits: nothing is held or recorded.
        refuse_unless_settles(processor.settles_live, claimed.tenant.environment)
        uow.commit()
    result = processor.charge(
        amount=claimed.amount,
        currency=claimed.currency,
        card=card,
        test_mode=claimed.tenant.environment == "test",
    )
    with db.unit_of_work() as uow:
        outcome = settle(uow, claimed, card, result)
        uow.commit()
    return outcome


def _record_payment(
    uow: UnitOfWork,
    claimed: _Claimed,
    card: Card,
    result: ChargeResult,
    *,
    order: OrderRecord | None,
    session_id: str = "",
    invoice_id: str = "",
) -> PaymentRecord:
    """Stores the charge as charged; a decline also goes on the order's timeline."""
    tenant = claimed.tenant
    payment = PaymentRecord(
        id=new_id("py"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        order_id=order.id if order is not None else "",
        checkout_session_id=session_id,
        invoice_id=invoice_id,
        amount=claimed.amount,
        currency=claimed.currency,
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
    if order is not None and not result.succeeded:
        timeline.add_entry(
            uow,
            tenant,
            order.id,
            "payment_failed",
            BUYER,
            f"Payment of {display(payment.amount, payment.currency)} failed: {result.decline_code}",
            object_id=payment.id,
            details={"decline_code": result.decline_code, "amount": str(payment.amount)},
        )
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


def _outcome(payment: PaymentRecord, result: ChargeResult, redirect_url: str = "") -> PayOutcome:
    return PayOutcome(
        succeeded=result.succeeded,
        payment_id=payment.id,
        decline_code=result.decline_code,
        message=result.message,
        redirect_url=redirect_url,
    )


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


def payment_link_page(session: Session, link_id: str) -> PayPage:
    """What a payment link's landing page shows. A reader: a visit (robots,
    prefetches, people who never pay) writes nothing; the order and checkout
    session are opened only when the buyer submits the page
    (payment_links.open_link)."""
    link = session.get(PaymentLinkRecord, link_id)
    if link is None:
        raise not_found("payment_link", link_id)
    return PayPage(
        id=link.id,
        state="payable" if link.active else "closed",
        merchant_name=_merchant_name(session, link.merchant_id),
        line_items=link.line_items,
        currency=link.currency,
        amount_total=total_of(link.line_items),
        test_mode=link.environment == "test",
        success_url=link.success_url,
    )


def pay_checkout_session(
    db: Database, processor: Processor, session_id: str, card_input: CardInput
) -> PayOutcome:
    return _collect(db, processor, session_id, card_input, _claim_session, _settle_session)


def _claim_session(uow: UnitOfWork, session_id: str, attempt: str) -> _Claimed:
    record = _session_by_id(uow.session, session_id)
    tenant = Tenant(record.merchant_id, record.environment)
    order = _lock_order(uow, tenant, record.order_id)
    attempts.take(
        uow,
        record,
        attempt,
        noun="session",
        check_payable=lambda: checkout.check_payable(record, uow.now),
        also=[CheckoutSessionRecord.expires_at > uow.now],
    )
    _check_order_payable(uow, tenant, order, record.id)
    return _Claimed(record.id, tenant, order.total, order.currency, order.id)


def _lock_order(uow: UnitOfWork, tenant: Tenant, order_id: str) -> OrderRecord:
    """Every claim and settle of an order's payment locks the order first (then
    the session or invoice): claims of one order's different sessions and
    invoices take turns, and no two lock in opposite orders."""
    return orders.load_order(uow.session, tenant, order_id, lock=True)


def _check_order_payable(uow: UnitOfWork, tenant: Tenant, order: OrderRecord, paying: str) -> None:
    if order.status != "open":
        # Paid another way (its checkout, another invoice) or canceled: paying
        # would charge twice, or for nothing.
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "ORDER_NOT_PAYABLE",
            f"The order is {order.status}",
            metadata={"status": order.status},
        )
    # Another session or invoice of the order being paid right now.
    attempts.refuse_if_order_held(uow.session, tenant, order.id, uow.now, besides=paying)


def _settle_session(
    uow: UnitOfWork, claimed: _Claimed, card: Card, result: ChargeResult
) -> PayOutcome:
    tenant = claimed.tenant
    order = _lock_order(uow, tenant, claimed.order_id)
    record = checkout.load_session(uow.session, tenant, claimed.id, lock=True)
    attempts.release(record)
    payment = _record_payment(uow, claimed, card, result, order=order, session_id=record.id)
    if not result.succeeded:
        return _outcome(payment, result)
    record.status = "complete"
    record.payment_id = payment.id
    record.version += 1
    record.updated_at = uow.now
    _mark_order_paid(uow, tenant, order, payment)
    checkout.emit_session(uow, tenant, record, "checkout.session.completed")
    return _outcome(payment, result, redirect_url=record.success_url)


# --- invoices ---------------------------------------------------------------------------------


def _invoice_by_id(session: Session, invoice_id: str, *, lock: bool = False) -> InvoiceRecord:
    invoice = session.get(InvoiceRecord, invoice_id, with_for_update=lock)
    if invoice is None or invoice.status == "draft":
        # Drafts are not public yet.
        raise not_found("invoice", invoice_id)
    return invoice


def _order_of(session: Session, invoice: InvoiceRecord) -> OrderRecord | None:
    # An invoice need not belong to an order.
    if not invoice.order_id:
        return None
    tenant = Tenant(invoice.merchant_id, invoice.environment)
    return orders.load_order(session, tenant, invoice.order_id)


def invoice_page(session: Session, invoice_id: str) -> PayPage:
    invoice = _invoice_by_id(session, invoice_id)
    state = {"open": "payable", "paid": "paid"}.get(invoice.status, "closed")
    order = _order_of(session, invoice)
    if state == "payable" and order is not None and order.status != "open":
        # Paid another way (checkout, another invoice) or canceled meanwhile.
        state = "closed"
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


InvoicePaid = Callable[[UnitOfWork, Tenant, InvoiceRecord, PaymentRecord], None]


def pay_invoice(
    db: Database,
    processor: Processor,
    invoice_id: str,
    card_input: CardInput,
    on_paid: InvoicePaid,
) -> PayOutcome:
    """`on_paid` finishes the invoice's side in the settling transaction."""
    settle = partial(_settle_invoice, on_paid=on_paid)
    return _collect(db, processor, invoice_id, card_input, _claim_invoice, settle)


def _claim_invoice(uow: UnitOfWork, invoice_id: str, attempt: str) -> _Claimed:
    invoice = _invoice_by_id(uow.session, invoice_id)
    tenant = Tenant(invoice.merchant_id, invoice.environment)
    # An invoice need not belong to an order.
    order = _lock_order(uow, tenant, invoice.order_id) if invoice.order_id else None
    attempts.take(uow, invoice, attempt, noun="invoice", check_payable=lambda: _check_open(invoice))
    if order is not None:
        _check_order_payable(uow, tenant, order, invoice.id)
    return _Claimed(invoice.id, tenant, invoice.total, invoice.currency, invoice.order_id)


def _check_open(invoice: InvoiceRecord) -> None:
    if invoice.status != "open":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "INVOICE_NOT_OPEN",
            f"The invoice is {invoice.status}",
            metadata={"status": invoice.status},
        )


def _settle_invoice(
    uow: UnitOfWork, claimed: _Claimed, card: Card, result: ChargeResult, *, on_paid: InvoicePaid
) -> PayOutcome:
    tenant = claimed.tenant
    order = _lock_order(uow, tenant, claimed.order_id) if claimed.order_id else None
    invoice = _invoice_by_id(uow.session, claimed.id, lock=True)
    attempts.release(invoice)
    payment = _record_payment(uow, claimed, card, result, order=order, invoice_id=invoice.id)
    if result.succeeded:
        on_paid(uow, tenant, invoice, payment)
        if order is not None and order.status == "open":
            _mark_order_paid(uow, tenant, order, payment)
    return _outcome(payment, result)
