"""The partner's view of one app's billing. This is a platform report over the
app's charges across merchants (the one kind of query DESIGN.md §4 allows to
cross merchants), limited to apps the partner owns."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from flint.apps.models import AppRecord
from flint.billing.charges import INTERVALS
from flint.billing.models import AppChargeRecord, AppInvoiceRecord
from flint.common.errors import not_found
from flint.common.money import int64_total, overflow

DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class Revenue:
    app_id: str
    environment: str
    by_status: dict[str, int]
    active_subscriptions: int
    revenue_to_date: dict[str, int]
    monthly_recurring: dict[str, int]


def monthly_amount(amount: int, interval: str) -> int:
    """A subscription's price per 30 days: every-30-days prices as they are;
    annual ones × 30 ÷ 365, rounded down to the minor unit."""
    days = INTERVALS[interval].days
    return amount if days == DAYS_PER_MONTH else amount * DAYS_PER_MONTH // days


def app_revenue(session: Session, partner_id: str, app_id: str, environment: str) -> Revenue:
    app = session.get(AppRecord, app_id)
    if app is None or app.partner_id != partner_id:
        raise not_found("app", app_id)
    by_status = {
        status: count
        for status, count in session.execute(
            select(AppChargeRecord.status, func.count())
            .where(AppChargeRecord.app_id == app_id, AppChargeRecord.environment == environment)
            .group_by(AppChargeRecord.status)
        )
    }
    active = list(
        session.scalars(
            select(AppChargeRecord).where(
                AppChargeRecord.app_id == app_id,
                AppChargeRecord.environment == environment,
                AppChargeRecord.kind == "recurring",
                AppChargeRecord.status == "active",
            )
        )
    )
    mrr: dict[str, int] = defaultdict(int)
    for charge in active:
        if not charge.cancel_at_period_end:
            mrr[charge.currency] += monthly_amount(charge.amount, charge.interval)
    for currency, total in mrr.items():
        int64_total("monthly recurring revenue", total, currency)
    paid = (
        select(AppInvoiceRecord.currency, func.sum(AppInvoiceRecord.amount_paid))
        .where(
            AppInvoiceRecord.app_id == app_id,
            AppInvoiceRecord.environment == environment,
            AppInvoiceRecord.status == "paid",
        )
        .group_by(AppInvoiceRecord.currency)
    )
    try:
        rows = session.execute(paid).all()
    except OperationalError as error:
        # SQLite's sum() raises on int64 overflow (PostgreSQL's returns numeric,
        # checked below); only rows written around the ceiling can get here.
        if "integer overflow" not in str(error.orig):
            raise
        raise overflow("revenue", "") from None
    revenue = {currency: int64_total("revenue", int(total), currency) for currency, total in rows}
    return Revenue(
        app_id=app_id,
        environment=environment,
        by_status=by_status,
        active_subscriptions=sum(1 for c in active if not c.cancel_at_period_end),
        revenue_to_date=revenue,
        monthly_recurring=dict(mrr),
    )
