"""Invoices: draft (editable) → open (finalized, numbered, payable on its hosted
page) → paid | void | uncollectible."""

from __future__ import annotations

import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flint.commerce import attempts, orders, presenter, timeline
from flint.commerce.context import BUYER, Actor, Tenant, list_scoped, load_scoped
from flint.commerce.events import emit
from flint.commerce.lines import (
    LineInput,
    check_money_inputs,
    stored_lines,
    total_of,
)
from flint.commerce.models import InvoiceCounterRecord, InvoiceRecord, PaymentRecord
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, Violations, invalid_argument
from flint.common.ids import new_id
from flint.common.money import display, normalize_currency
from flint.common.validation import check_email, check_metadata, update_paths

MAX_LINE_ITEMS = 100
STATUSES = ("draft", "open", "paid", "void", "uncollectible")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
UPDATABLE = ("customer_email", "line_items", "currency", "due_date", "order_id", "metadata")


@dataclass(frozen=True)
class InvoiceFields:
    customer_email: str = ""
    lines: Sequence[LineInput] = ()
    currency: str = ""
    due_date: str = ""
    order_id: str = ""
    metadata: dict[str, str] | None = None


def _emit(uow: UnitOfWork, tenant: Tenant, invoice: InvoiceRecord, type_: str) -> None:
    emit(
        uow,
        tenant,
        type_,
        object_type="invoice",
        object_id=invoice.id,
        version=invoice.version,
        message=presenter.invoice_pb(invoice),
    )


def _validate(violations: Violations, values: InvoiceFields, paths: AbstractSet[str]) -> None:
    if "customer_email" in paths:
        check_email(
            violations, "invoice.customer_email", values.customer_email.strip(), required=True
        )
    if paths & {"line_items", "currency"}:
        check_money_inputs(
            violations, "invoice", values.lines, values.currency, max_items=MAX_LINE_ITEMS
        )
    if "due_date" in paths:
        # fromisoformat also takes other ISO 8601 forms ("2030-W05-1"), stored as given.
        try:
            date.fromisoformat(values.due_date)
            if not _DATE.fullmatch(values.due_date):
                raise ValueError(values.due_date)
        except ValueError:
            violations.add("invoice.due_date", "INVALID_DATE", "must be a date as YYYY-MM-DD")
    if "metadata" in paths:
        check_metadata(violations, "invoice.metadata", values.metadata or {})


def _check_order_link(
    uow: UnitOfWork, tenant: Tenant, order_id: str, currency: str, total: int
) -> None:
    """An invoice of an order bills it in full: paying the invoice pays the order."""
    if not order_id:
        return
    order = orders.load_order(uow.session, tenant, order_id)
    if order.status != "open":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "ORDER_NOT_PAYABLE",
            f"Only open orders can be invoiced; this one is {order.status}",
        )
    if order.currency != normalize_currency(currency):
        raise invalid_argument(
            "invoice.currency", "CURRENCY_MISMATCH", "must be the linked order's currency"
        )
    if order.total != total:
        raise invalid_argument(
            "invoice.line_items",
            "AMOUNT_MISMATCH",
            f"must total the linked order's {display(order.total, order.currency)}",
        )


def create_invoice(uow: UnitOfWork, tenant: Tenant, values: InvoiceFields) -> InvoiceRecord:
    violations = Violations()
    _validate(violations, values, set(UPDATABLE))
    violations.raise_if_any()
    items = stored_lines(values.lines)
    total = total_of(items)
    _check_order_link(uow, tenant, values.order_id, values.currency, total)
    invoice = InvoiceRecord(
        id=new_id("in"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        number="",
        status="draft",
        customer_email=values.customer_email.strip(),
        line_items=items,
        currency=normalize_currency(values.currency),
        subtotal=total,
        total=total,
        amount_paid=0,
        due_date=values.due_date,
        order_id=values.order_id,
        payment_id="",
        metadata_=dict(values.metadata or {}),
        attempt_id="",
        attempt_until=None,
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
        finalized_at=None,
        paid_at=None,
    )
    uow.session.add(invoice)
    _emit(uow, tenant, invoice, "invoice.created")
    return invoice


def load_invoice(
    session: Session, tenant: Tenant, invoice_id: str, *, lock: bool = False
) -> InvoiceRecord:
    return load_scoped(session, InvoiceRecord, tenant, invoice_id, resource="invoice", lock=lock)


def list_invoices(
    session: Session,
    tenant: Tenant,
    *,
    page_size: int,
    page_token: str,
    status: str,
    order_id: str,
) -> tuple[list[InvoiceRecord], str]:
    if status and status not in STATUSES:
        raise invalid_argument("status", "UNKNOWN_ENUM_VALUE", "is not an invoice status")
    return list_scoped(
        session,
        InvoiceRecord,
        tenant,
        list_name="invoices",
        page_size=page_size,
        page_token=page_token,
        filters=[(InvoiceRecord.status, status), (InvoiceRecord.order_id, order_id)],
    )


def _require(invoice: InvoiceRecord, status: str, reason: str, action: str) -> None:
    if invoice.status != status:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            reason,
            f"Only {status} invoices can be {action}; this one is {invoice.status}",
            metadata={"status": invoice.status},
        )


def update_invoice(
    uow: UnitOfWork, tenant: Tenant, invoice_id: str, values: InvoiceFields, mask: Sequence[str]
) -> InvoiceRecord:
    given = {
        "customer_email": values.customer_email,
        "line_items": values.lines,
        "currency": values.currency,
        "due_date": values.due_date,
        "order_id": values.order_id,
        "metadata": values.metadata,
    }
    paths = update_paths(mask, UPDATABLE, "invoice", given)
    invoice = load_invoice(uow.session, tenant, invoice_id, lock=True)
    _require(invoice, "draft", "INVOICE_NOT_DRAFT", "edited")
    merged = InvoiceFields(
        customer_email=values.customer_email
        if "customer_email" in paths
        else invoice.customer_email,
        lines=values.lines
        if "line_items" in paths
        else [
            LineInput(i["name"], i["quantity"], i["unit_amount"], i.get("sku", ""))
            for i in invoice.line_items
        ],
        currency=values.currency if "currency" in paths else invoice.currency,
        due_date=values.due_date if "due_date" in paths else invoice.due_date,
        order_id=values.order_id if "order_id" in paths else invoice.order_id,
        metadata=values.metadata if "metadata" in paths else invoice.metadata_,
    )
    violations = Violations()
    _validate(violations, merged, paths | ({"currency"} if "line_items" in paths else set()))
    violations.raise_if_any()
    items = stored_lines(merged.lines)
    if paths & {"order_id", "currency", "line_items"}:
        _check_order_link(uow, tenant, merged.order_id, merged.currency, total_of(items))
    invoice.customer_email = merged.customer_email.strip()
    invoice.line_items = items
    invoice.currency = normalize_currency(merged.currency)
    invoice.subtotal = invoice.total = total_of(items)
    invoice.due_date = merged.due_date
    invoice.order_id = merged.order_id
    invoice.metadata_ = dict(merged.metadata or {})
    invoice.version += 1
    invoice.updated_at = uow.now
    _emit(uow, tenant, invoice, "invoice.updated")
    return invoice


def _next_number(uow: UnitOfWork, tenant: Tenant) -> str:
    key = (tenant.merchant_id, tenant.environment)
    counter = uow.session.get(InvoiceCounterRecord, key, with_for_update=True)
    if counter is None:
        try:
            with uow.session.begin_nested():
                counter = InvoiceCounterRecord(
                    merchant_id=tenant.merchant_id, environment=tenant.environment, next_number=1
                )
                uow.session.add(counter)
        except IntegrityError:
            # Another finalization created the counter first.
            counter = uow.session.get(
                InvoiceCounterRecord, key, with_for_update=True, populate_existing=True
            )
            assert counter is not None  # noqa: S101
    number = counter.next_number
    counter.next_number += 1
    return f"INV-{number:06d}"


def finalize_invoice(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, invoice_id: str
) -> InvoiceRecord:
    invoice = load_invoice(uow.session, tenant, invoice_id, lock=True)
    _require(invoice, "draft", "INVOICE_NOT_DRAFT", "finalized")
    if invoice.order_id:
        _check_order_link(uow, tenant, invoice.order_id, invoice.currency, invoice.total)
    invoice.number = _next_number(uow, tenant)
    invoice.status = "open"
    invoice.finalized_at = uow.now
    invoice.version += 1
    invoice.updated_at = uow.now
    if invoice.order_id:
        timeline.add_entry(
            uow,
            tenant,
            invoice.order_id,
            "invoice_finalized",
            actor,
            f"Invoice {invoice.number} finalized for {display(invoice.total, invoice.currency)}",
            object_id=invoice.id,
        )
    _emit(uow, tenant, invoice, "invoice.finalized")
    return invoice


def void_invoice(uow: UnitOfWork, tenant: Tenant, actor: Actor, invoice_id: str) -> InvoiceRecord:
    return _close(uow, tenant, actor, invoice_id, "void", "voided")


def mark_uncollectible(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, invoice_id: str
) -> InvoiceRecord:
    return _close(uow, tenant, actor, invoice_id, "uncollectible", "marked_uncollectible")


def _close(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, invoice_id: str, status: str, event: str
) -> InvoiceRecord:
    invoice = load_invoice(uow.session, tenant, invoice_id, lock=True)
    _require(invoice, "open", "INVOICE_NOT_OPEN", event.replace("_", " "))
    attempts.refuse_if_held(invoice, uow.now, "invoice")
    invoice.status = status
    invoice.version += 1
    invoice.updated_at = uow.now
    if invoice.order_id:
        timeline.add_entry(
            uow,
            tenant,
            invoice.order_id,
            f"invoice_{event}",
            actor,
            f"Invoice {invoice.number} {event.replace('_', ' ')}",
            object_id=invoice.id,
        )
    _emit(uow, tenant, invoice, f"invoice.{event}")
    return invoice


def mark_paid(
    uow: UnitOfWork, tenant: Tenant, invoice: InvoiceRecord, payment: PaymentRecord
) -> None:
    """Called by the payment flow when a buyer paid the invoice."""
    invoice.status = "paid"
    invoice.amount_paid = payment.amount
    invoice.payment_id = payment.id
    invoice.paid_at = uow.now
    invoice.version += 1
    invoice.updated_at = uow.now
    if invoice.order_id:
        timeline.add_entry(
            uow,
            tenant,
            invoice.order_id,
            "invoice_paid",
            BUYER,
            f"Invoice {invoice.number} paid",
            object_id=invoice.id,
        )
    _emit(uow, tenant, invoice, "invoice.paid")
