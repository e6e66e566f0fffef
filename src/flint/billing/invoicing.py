"""App invoices and their lines, created by the billing run (`cycles`) and by a
subscription replaced immediately (`charges`), which bills the replaced plan's
current period at once instead of at its period end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flint.billing import presenter
from flint.billing.models import AppChargeRecord, AppInvoiceRecord
from flint.commerce.presenter import snapshot
from flint.common.db import UnitOfWork
from flint.common.events import record_event
from flint.common.ids import new_id
from flint.common.money import ceiling, over_ceiling

# A run (or a replacement) catches up at most this many periods of one charge
# (a server off for long).
MAX_PERIODS_PER_RUN = 24
CREDIT_DESCRIPTION = "Credit for unused time on the old plan"


def line(charge: AppChargeRecord, description: str, amount: int) -> dict[str, Any]:
    return {"description": description, "amount": amount, "app_charge_id": charge.id}


def days(start: datetime, end: datetime) -> str:
    return f"{start.date().isoformat()} to {end.date().isoformat()}"


def apply_credit(charge: AppChargeRecord, amount: int) -> list[dict[str, Any]]:
    """The credit line (none, or one) that the charge's remaining proration credit
    takes off `amount` billed; what is left of the credit stays on the charge."""
    applied = min(charge.credit, amount)
    if applied <= 0:
        return []
    charge.credit -= applied
    return [line(charge, CREDIT_DESCRIPTION, -applied)]


def emit_invoice(uow: UnitOfWork, invoice: AppInvoiceRecord, type_: str) -> None:
    record_event(
        uow,
        merchant_id=invoice.merchant_id,
        environment=invoice.environment,
        type=type_,
        object_type="app_invoice",
        object_id=invoice.id,
        object_version=invoice.version,
        data=snapshot(presenter.invoice_pb(invoice)),
        app_id=invoice.app_id,
    )


def create_invoice(
    uow: UnitOfWork,
    merchant_id: str,
    environment: str,
    app_id: str,
    currency: str,
    lines: list[dict[str, Any]],
) -> AppInvoiceRecord:
    total = max(0, sum(line["amount"] for line in lines))
    if total > ceiling(currency):
        # Refused, never stored: no payment can carry it, and int64 fields cannot either.
        raise over_ceiling("app invoice total", total, currency)
    settled = environment == "test" or total == 0
    invoice = AppInvoiceRecord(
        id=new_id("ain"),
        merchant_id=merchant_id,
        environment=environment,
        app_id=app_id,
        # Test mode: paid with no money moved, the processor never called.
        status="paid" if settled else "open",
        currency=currency,
        lines=lines,
        total=total,
        amount_paid=total if settled else 0,
        attempt_count=0,
        # Open: the next billing run's collection charges it.
        next_attempt_at=None if settled else uow.now,
        decline_code="",
        processor_reference="",
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
        paid_at=uow.now if settled else None,
    )
    uow.session.add(invoice)
    if settled:
        emit_invoice(uow, invoice, "app_invoice.paid")
    return invoice
