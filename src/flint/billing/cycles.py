"""Billing runs: `run_cycles(db, vault, now)` does everything that is due at
`now`, so tests (and `flint billing run-cycles --now …`) move time instead of
waiting, and the server's maintenance loop calls it with the real clock.

1. Pending charges past their 2 days expire.
2. Every active charge whose period ended is invoiced in arrears: a one-time
   charge once; a subscription for each paid period that ended (trial periods
   produce no line); a usage charge for the usage recorded in the period. The
   lines of one app, merchant, environment and currency form one app invoice.
   Periods roll forward; a subscription replaced "at period end" ends here.
3. Test-environment invoices are marked paid at once with no money moved (the
   processor is never called). Live invoices are charged to the merchant's card
   on file, with no transaction open during the processor call; a failure is
   retried after 1, 3 and 5 days, and then the invoice is uncollectible and its
   charges freeze.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from flint.billing import charges
from flint.billing.cards import get_card
from flint.billing.invoicing import (
    MAX_PERIODS_PER_RUN,
    apply_credit,
    create_invoice,
    days,
    emit_invoice,
    line,
)
from flint.billing.models import AppChargeRecord, AppInvoiceRecord, UsageRecordRecord
from flint.billing.vault import CardVault
from flint.commerce.context import Tenant, list_scoped
from flint.common.db import Database, UnitOfWork
from flint.common.jobs import Item, Lister, Work, run_job
from flint.common.money import ceiling, display, over_ceiling

# Delays before the 2nd, 3rd and 4th attempt; after the 4th failure, give up.
RETRY_SCHEDULE = (timedelta(days=1), timedelta(days=3), timedelta(days=5))
# How long a payment attempt holds an invoice (no other runner charges it).
ATTEMPT_LEASE = timedelta(minutes=5)


BILLING_EXPIRY_JOB = "app_charge_expiry"
BILLING_INVOICE_JOB = "app_billing"
BILLING_COLLECT_JOB = "app_invoice_collection"


@dataclass
class RunResult:
    expired: int = 0
    invoiced: int = 0
    paid: int = 0
    failed: int = 0
    # Charges, invoice groups or invoices that raised (noted in job_failures).
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "app_charges_expired": self.expired,
            "app_invoices_created": self.invoiced,
            "app_invoices_paid": self.paid,
            "app_invoice_payments_failed": self.failed,
            "app_billing_errors": self.errors,
        }


@contextmanager
def _work(db: Database, at: datetime) -> Iterator[UnitOfWork]:
    """A unit of work whose time is the run's `at`, not the wall clock."""
    with db.unit_of_work() as uow:
        uow.now = at
        yield uow


def run_cycles(db: Database, vault: CardVault, now: datetime | None = None) -> RunResult:
    """Everything due at `now` (default: the database's clock). Every charge,
    every (merchant, environment, app, currency) invoice and every payment is
    done in its own transaction: one that fails is noted and retried later
    (see flint.common.jobs), and never stops the others."""
    at = now or db.clock()
    result = RunResult()
    expiry = run_job(db, BILLING_EXPIRY_JOB, at, _expiring(db, at), _expire(db, at))
    result.expired = expiry.done
    invoicing = run_job(db, BILLING_INVOICE_JOB, at, _billable(db, at), _invoice(db, at))
    result.invoiced = invoicing.done
    outcomes: list[bool] = []
    collection = run_job(
        db, BILLING_COLLECT_JOB, at, _collectable(db, at), _pay(db, vault, at, outcomes)
    )
    result.paid = outcomes.count(True)
    result.failed = outcomes.count(False)
    result.errors = expiry.failed + invoicing.failed + collection.failed
    return result


def _expiring(db: Database, at: datetime) -> Lister:
    def items(waiting: frozenset[str]) -> list[Item]:
        query = select(
            AppChargeRecord.id, AppChargeRecord.merchant_id, AppChargeRecord.environment
        ).where(AppChargeRecord.status.in_(charges.LIVE_STATUSES), AppChargeRecord.expires_at <= at)
        if waiting:
            query = query.where(AppChargeRecord.id.not_in(waiting))
        with db.read() as session:
            return [Item(*row) for row in session.execute(query.order_by(AppChargeRecord.id))]

    return items


def _expire(db: Database, at: datetime) -> Work:
    def work(item: Item) -> int:
        with _work(db, at) as uow:
            expired = charges.expire_due(uow, charge_id=item.id)
            uow.commit()
        return expired

    return work


def _group_id(merchant_id: str, environment: str, app_id: str, currency: str) -> str:
    return f"{merchant_id}/{environment}/{app_id}/{currency}"


def _billable(db: Database, at: datetime) -> Lister:
    """One item per (merchant, environment, app, currency) with a period ended:
    the lines of one group make one app invoice."""

    def items(waiting: frozenset[str]) -> list[Item]:
        with db.read() as session:
            rows = session.execute(
                select(
                    AppChargeRecord.merchant_id,
                    AppChargeRecord.environment,
                    AppChargeRecord.app_id,
                    AppChargeRecord.currency,
                )
                .where(
                    AppChargeRecord.status == "active",
                    AppChargeRecord.period_end.is_not(None),
                    AppChargeRecord.period_end <= at,
                )
                .distinct()
            ).all()
        found = [Item(_group_id(*row), row[0], row[1]) for row in rows]
        return sorted((item for item in found if item.id not in waiting), key=lambda i: i.id)

    return items


def _invoice(db: Database, at: datetime) -> Work:
    def work(item: Item) -> int:
        merchant_id, environment, app_id, currency = item.id.split("/")
        with _work(db, at) as uow:
            due = list(
                uow.session.scalars(
                    select(AppChargeRecord)
                    .where(
                        AppChargeRecord.merchant_id == merchant_id,
                        AppChargeRecord.environment == environment,
                        AppChargeRecord.app_id == app_id,
                        AppChargeRecord.currency == currency,
                        AppChargeRecord.status == "active",
                        AppChargeRecord.period_end.is_not(None),
                        AppChargeRecord.period_end <= uow.now,
                    )
                    .order_by(AppChargeRecord.id)
                    .with_for_update(skip_locked=True)
                )
            )
            lines: list[dict[str, Any]] = []
            for charge in due:
                lines.extend(_bill(uow, charge))
            created = 0
            for part in _under_ceiling(lines, currency):
                create_invoice(uow, merchant_id, environment, app_id, currency, part)
                created += 1
            uow.commit()
        return created

    return work


def _under_ceiling(lines: list[dict[str, Any]], currency: str) -> list[list[dict[str, Any]]]:
    """The lines split into invoices whose totals each stay under the amount
    ceiling (an app may have several charges of one currency, each under it).
    A line over the ceiling alone cannot be billed: refused, so the group is
    noted as failed instead of storing a total no payment can carry."""
    limit = ceiling(currency)
    parts: list[list[dict[str, Any]]] = []
    total = 0
    for entry in lines:
        amount = int(entry["amount"])
        if amount > limit:
            raise over_ceiling("app invoice line", amount, currency)
        if not parts or total + amount > limit:
            parts.append([])
            total = 0
        parts[-1].append(entry)
        total += amount
    return parts


def _bill(uow: UnitOfWork, charge: AppChargeRecord) -> list[dict[str, Any]]:
    """The lines of every period of `charge` that ended by now; rolls it forward."""
    lines: list[dict[str, Any]] = []
    if charge.kind == "one_time":
        lines.append(line(charge, charge.name, charge.amount))
        charge.period_end = None
        charge.version += 1
        charge.updated_at = uow.now
        return lines
    for _ in range(MAX_PERIODS_PER_RUN):
        start, end = charge.period_start, charge.period_end
        if start is None or end is None or end > uow.now or charge.status != "active":
            break
        if charge.kind == "recurring":
            in_trial = charge.trial_ends_at is not None and end <= charge.trial_ends_at
            if not in_trial:
                lines.append(line(charge, f"{charge.name} ({days(start, end)})", charge.amount))
                lines.extend(apply_credit(charge, charge.amount))
            next_end = end + charges.INTERVALS[charge.interval]
        else:
            used = int(
                uow.session.scalar(
                    select(func.coalesce(func.sum(UsageRecordRecord.amount), 0)).where(
                        UsageRecordRecord.merchant_id == charge.merchant_id,
                        UsageRecordRecord.environment == charge.environment,
                        UsageRecordRecord.charge_id == charge.id,
                        UsageRecordRecord.period_start == start,
                    )
                )
                or 0
            )
            if used:
                lines.append(line(charge, f"{charge.name}: usage ({days(start, end)})", used))
            charge.balance_used = 0
            next_end = end + charges.USAGE_PERIOD
        charge.period_start, charge.period_end = end, next_end
        charge.version += 1
        charge.updated_at = uow.now
        if charge.cancel_at_period_end:
            # Replaced at its period end: the new subscription takes over now.
            charge.status = "canceled"
            charge.canceled_at = uow.now
            charge.period_end = None
            charges.emit(uow, charge, "app_charge.canceled")
    return lines


def _collectable(db: Database, at: datetime) -> Lister:
    def items(waiting: frozenset[str]) -> list[Item]:
        query = select(
            AppInvoiceRecord.id, AppInvoiceRecord.merchant_id, AppInvoiceRecord.environment
        ).where(AppInvoiceRecord.status == "open", AppInvoiceRecord.next_attempt_at <= at)
        if waiting:
            query = query.where(AppInvoiceRecord.id.not_in(waiting))
        with db.read() as session:
            return [Item(*row) for row in session.execute(query.order_by(AppInvoiceRecord.id))]

    return items


def _pay(db: Database, vault: CardVault, at: datetime, outcomes: list[bool]) -> Work:
    def work(item: Item) -> int:
        outcome = _attempt(db, vault, item.id, at)
        if outcome is None:
            return 0
        outcomes.append(outcome)
        return 1

    return work


def _attempt(db: Database, vault: CardVault, invoice_id: str, at: datetime) -> bool | None:
    # 1. Claim the invoice in a short transaction (one runner charges it).
    with _work(db, at) as uow:
        claimed = uow.session.execute(
            update(AppInvoiceRecord)
            .where(
                AppInvoiceRecord.id == invoice_id,
                AppInvoiceRecord.status == "open",
                AppInvoiceRecord.next_attempt_at <= uow.now,
            )
            .values(next_attempt_at=uow.now + ATTEMPT_LEASE)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        invoice = uow.session.get(AppInvoiceRecord, invoice_id)
        assert invoice is not None  # noqa: S101
        card = get_card(uow.session, invoice.merchant_id)
        token = card.token if card else ""
        amount, currency = invoice.total, invoice.currency
        uow.commit()
    # 2. Charge with no transaction open (a real acquirer is a network call).
    # Only live invoices get here (test ones are settled when made); the test
    # vault must not pass a test card off as live money.
    if not vault.settles_live:
        succeeded, decline, reference = False, "live_payments_not_configured", ""
    elif token:
        result = vault.charge(token=token, amount=amount, currency=currency)
        succeeded, decline, reference = result.succeeded, result.decline_code, result.reference
    else:
        succeeded, decline, reference = False, "no_card_on_file", ""
    # 3. Record the outcome.
    with _work(db, at) as uow:
        invoice = uow.session.get(AppInvoiceRecord, invoice_id, with_for_update=True)
        assert invoice is not None  # noqa: S101
        invoice.attempt_count += 1
        invoice.version += 1
        invoice.updated_at = uow.now
        if succeeded:
            invoice.status = "paid"
            invoice.amount_paid = invoice.total
            invoice.paid_at = uow.now
            invoice.next_attempt_at = None
            invoice.processor_reference = reference
            invoice.decline_code = ""
            emit_invoice(uow, invoice, "app_invoice.paid")
        else:
            invoice.decline_code = decline
            if invoice.attempt_count > len(RETRY_SCHEDULE):
                invoice.status = "uncollectible"
                invoice.next_attempt_at = None
                _freeze_lines(uow, invoice)
            else:
                invoice.next_attempt_at = uow.now + RETRY_SCHEDULE[invoice.attempt_count - 1]
            emit_invoice(uow, invoice, "app_invoice.payment_failed")
        uow.commit()
    return succeeded


def _freeze_lines(uow: UnitOfWork, invoice: AppInvoiceRecord) -> None:
    ids = sorted({line["app_charge_id"] for line in invoice.lines})
    for charge in uow.session.scalars(
        select(AppChargeRecord)
        .where(
            AppChargeRecord.merchant_id == invoice.merchant_id,
            AppChargeRecord.environment == invoice.environment,
            AppChargeRecord.id.in_(ids),
            AppChargeRecord.status.in_(charges.LIVE_STATUSES),
        )
        .with_for_update()
    ):
        charges.freeze(uow, charge)


def list_invoices(
    session: Session, tenant: Tenant, *, app_id: str, page_size: int, page_token: str
) -> tuple[list[AppInvoiceRecord], str]:
    """The tenant's app invoices, newest first; one app's when `app_id` is given."""
    return list_scoped(
        session,
        AppInvoiceRecord,
        tenant,
        list_name="app_invoices",
        page_size=page_size,
        page_token=page_token,
        filters=[(AppInvoiceRecord.app_id, app_id)],
    )


def describe(invoice: AppInvoiceRecord) -> str:
    return f"{invoice.id} {invoice.status} {display(invoice.total, invoice.currency)}"
