"""App charges: an installed app charging the merchant for itself.

Every charge is created `pending` and changes only by the merchant's decision
on the hosted confirmation page (approve → active, decline → declined), by time
(pending for 2 days → expired), by the install (grant revoked or app
uninstalled → frozen), by a final payment failure (→ frozen) or by a cancel
from either side (→ canceled).

Concurrency: every read-then-write locks the charge row (PostgreSQL) inside a
`BEGIN IMMEDIATE` writer (SQLite). The "one active subscription per app and
merchant" rule locks the install row first, then charges: one fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.accounts.models import MerchantRecord, PartnerRecord
from flint.apps.models import AppRecord
from flint.billing import presenter
from flint.billing.invoicing import MAX_PERIODS_PER_RUN, apply_credit, create_invoice, days, line
from flint.billing.models import AppChargeRecord, UsageRecordRecord
from flint.commerce.context import Tenant, list_scoped, scoped
from flint.commerce.presenter import snapshot
from flint.commerce.processor import refuse_unless_settles
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, Violations, invalid_argument, not_found
from flint.common.events import record_event
from flint.common.ids import new_id
from flint.common.money import (
    check_amount,
    check_ceiling,
    check_currency,
    known_currency,
    normalize_currency,
)
from flint.common.validation import check_text, check_url
from flint.installs.models import GrantRecord, InstallRecord

BILLING_SCOPE = "billing:write"
CONFIRM_WITHIN = timedelta(days=2)
INTERVALS = {"every_30_days": timedelta(days=30), "annual": timedelta(days=365)}
USAGE_PERIOD = timedelta(days=30)
MAX_TRIAL_DAYS = 365
KINDS = ("one_time", "recurring", "usage")
STATUSES = ("pending", "active", "declined", "expired", "frozen", "canceled")
LIVE_STATUSES = ("pending", "active")


@dataclass(frozen=True)
class AppCaller:
    """An app acting on one install, in one environment."""

    tenant: Tenant
    app_id: str
    install_id: str


@dataclass(frozen=True)
class ChargeInput:
    kind: str
    name: str
    currency: str
    return_url: str
    amount: int = 0
    interval: str = ""
    trial_days: int = 0
    capped_amount: int = 0
    replacement: str = ""


@dataclass(frozen=True)
class Confirmation:
    charge: AppChargeRecord
    app_name: str
    partner_name: str
    merchant_name: str
    state: str  # open, decided, expired
    cap_increase: bool


def emit(uow: UnitOfWork, charge: AppChargeRecord, type_: str) -> None:
    record_event(
        uow,
        merchant_id=charge.merchant_id,
        environment=charge.environment,
        type=type_,
        object_type="app_charge",
        object_id=charge.id,
        object_version=charge.version,
        data=snapshot(presenter.charge_pb(charge)),
        # Only the charging app (and the merchant) sees it.
        app_id=charge.app_id,
    )


def _touch(charge: AppChargeRecord, now: datetime) -> None:
    charge.version += 1
    charge.updated_at = now


def _refuse_over_ceiling(fld: str, amount: int, currency: str) -> None:
    violations = Violations()
    check_ceiling(violations, fld, amount, currency)
    violations.raise_if_any()


def _validate(values: ChargeInput) -> None:
    violations = Violations()
    if values.kind not in KINDS:
        violations.add("app_charge.kind", "FIELD_REQUIRED", "must be one-time, recurring or usage")
    check_text(violations, "app_charge.name", values.name, max_length=100, required=True)
    check_currency(violations, "app_charge.currency", values.currency)
    check_url(violations, "app_charge.return_url", values.return_url, required=True)
    if values.kind in ("one_time", "recurring"):
        check_amount(
            violations, "app_charge.amount", values.amount, known_currency(values.currency)
        )
    if values.kind == "recurring":
        if values.interval not in INTERVALS:
            violations.add(
                "app_charge.interval", "FIELD_REQUIRED", "must be every 30 days or annual"
            )
        if not 0 <= values.trial_days <= MAX_TRIAL_DAYS:
            violations.add(
                "app_charge.trial_days", "INVALID_TRIAL_DAYS", f"must be 0 to {MAX_TRIAL_DAYS}"
            )
    else:
        if values.interval:
            violations.add(
                "app_charge.interval", "FIELD_NOT_ALLOWED", "only recurring charges have one"
            )
        if values.trial_days:
            violations.add(
                "app_charge.trial_days", "FIELD_NOT_ALLOWED", "only recurring charges have a trial"
            )
    if values.kind == "usage":
        check_amount(
            violations,
            "app_charge.capped_amount",
            values.capped_amount,
            known_currency(values.currency),
        )
        if values.amount:
            violations.add(
                "app_charge.amount", "FIELD_NOT_ALLOWED", "usage charges bill recorded usage"
            )
    elif values.capped_amount:
        violations.add(
            "app_charge.capped_amount", "FIELD_NOT_ALLOWED", "only usage charges have a cap"
        )
    if values.replacement and values.kind != "recurring":
        violations.add(
            "app_charge.replacement_behavior",
            "FIELD_NOT_ALLOWED",
            "only recurring charges replace a subscription",
        )
    violations.raise_if_any()


def _check_grant(session: Session, caller: AppCaller, *, lock: bool = False) -> InstallRecord:
    query = select(InstallRecord).where(InstallRecord.id == caller.install_id)
    if lock:
        query = query.with_for_update()
    install = session.scalar(query)
    grant = session.get(GrantRecord, (caller.install_id, caller.tenant.environment))
    if (
        install is None
        or install.status != "active"
        or grant is None
        or grant.status != "active"
        or install.merchant_id != caller.tenant.merchant_id
    ):
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "GRANT_NOT_ACTIVE",
            f"The install has no active {caller.tenant.environment} grant",
            metadata={"environment": caller.tenant.environment},
        )
    if BILLING_SCOPE not in grant.scopes:
        raise FlintError(
            Code.PERMISSION_DENIED,
            "SCOPE_MISSING",
            f"The install has not granted the scope {BILLING_SCOPE!r}",
            metadata={"scope": BILLING_SCOPE},
        )
    return install


def _active_subscription(
    session: Session, tenant: Tenant, app_id: str, *, exclude: str = ""
) -> AppChargeRecord | None:
    query = (
        scoped(AppChargeRecord, tenant)
        .where(
            AppChargeRecord.app_id == app_id,
            AppChargeRecord.kind == "recurring",
            AppChargeRecord.status == "active",
            AppChargeRecord.cancel_at_period_end.is_(False),
            AppChargeRecord.id != exclude,
        )
        .with_for_update()
    )
    return session.scalars(query).first()


def _refuse_second_subscription() -> FlintError:
    return FlintError(
        Code.FAILED_PRECONDITION,
        "SUBSCRIPTION_ALREADY_ACTIVE",
        "The app already has an active subscription; set replacement_behavior to replace it",
    )


def create_charge(uow: UnitOfWork, caller: AppCaller, values: ChargeInput) -> AppChargeRecord:
    _validate(values)
    _check_grant(uow.session, caller, lock=True)
    tenant = caller.tenant
    if (
        values.kind == "recurring"
        and not values.replacement
        and _active_subscription(uow.session, tenant, caller.app_id)
    ):
        raise _refuse_second_subscription()
    charge = AppChargeRecord(
        id=new_id("chg"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        app_id=caller.app_id,
        install_id=caller.install_id,
        kind=values.kind,
        status="pending",
        name=values.name.strip(),
        currency=normalize_currency(values.currency),
        amount=values.amount,
        interval=values.interval if values.kind == "recurring" else "",
        trial_days=values.trial_days,
        trial_ends_at=None,
        capped_amount=values.capped_amount,
        pending_capped_amount=0,
        balance_used=0,
        replacement=values.replacement,
        replaces_id="",
        cancel_at_period_end=False,
        credit=0,
        return_url=values.return_url,
        period_start=None,
        period_end=None,
        expires_at=uow.now + CONFIRM_WITHIN,
        activated_at=None,
        canceled_at=None,
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
    )
    uow.session.add(charge)
    emit(uow, charge, "app_charge.created")
    return charge


def load_charge(
    session: Session, tenant: Tenant, charge_id: str, *, app_id: str = "", lock: bool = False
) -> AppChargeRecord:
    """A charge of the tenant; with `app_id`, only that app's (others: NOT_FOUND)."""
    query = scoped(AppChargeRecord, tenant).where(AppChargeRecord.id == charge_id)
    if app_id:
        query = query.where(AppChargeRecord.app_id == app_id)
    if lock:
        query = query.with_for_update()
    charge = session.scalar(query)
    if charge is None:
        raise not_found("app_charge", charge_id)
    return charge


def _merchant_charge(
    session: Session, merchant_id: str, charge_id: str, *, lock: bool = False
) -> AppChargeRecord:
    """For the signed-in merchant, whose session spans both environments."""
    query = select(AppChargeRecord).where(
        AppChargeRecord.merchant_id == merchant_id, AppChargeRecord.id == charge_id
    )
    if lock:
        query = query.with_for_update()
    charge = session.scalar(query)
    if charge is None:
        raise not_found("app_charge", charge_id)
    return charge


def app_names(session: Session, charges: list[AppChargeRecord]) -> dict[str, str]:
    ids = {c.app_id for c in charges}
    if not ids:
        return {}
    rows = session.execute(select(AppRecord.id, AppRecord.name).where(AppRecord.id.in_(ids)))
    return {row.id: row.name for row in rows}


def list_charges(
    session: Session,
    tenant: Tenant,
    *,
    app_id: str,
    status: str,
    page_size: int,
    page_token: str,
) -> tuple[list[AppChargeRecord], str]:
    if status and status not in STATUSES:
        raise invalid_argument("status", "UNKNOWN_ENUM_VALUE", "is not an app charge status")
    return list_scoped(
        session,
        AppChargeRecord,
        tenant,
        list_name="app_charges",
        page_size=page_size,
        page_token=page_token,
        filters=[(AppChargeRecord.app_id, app_id), (AppChargeRecord.status, status)],
    )


def _cancel(uow: UnitOfWork, charge: AppChargeRecord) -> AppChargeRecord:
    if charge.status not in LIVE_STATUSES:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_CHARGE_NOT_CANCELABLE",
            f"Only pending or active charges can be canceled; this one is {charge.status}",
            metadata={"status": charge.status},
        )
    charge.status = "canceled"
    charge.canceled_at = uow.now
    _touch(charge, uow.now)
    emit(uow, charge, "app_charge.canceled")
    return charge


def cancel_charge(
    uow: UnitOfWork, tenant: Tenant, charge_id: str, *, app_id: str = ""
) -> AppChargeRecord:
    """By the app (`app_id` given: only its own charges) or the merchant's key.
    What was used in the period is not invoiced: a cancel forgoes it."""
    return _cancel(uow, load_charge(uow.session, tenant, charge_id, app_id=app_id, lock=True))


def cancel_for_merchant(uow: UnitOfWork, merchant_id: str, charge_id: str) -> AppChargeRecord:
    return _cancel(uow, _merchant_charge(uow.session, merchant_id, charge_id, lock=True))


def increase_cap(
    uow: UnitOfWork, caller: AppCaller, charge_id: str, capped_amount: int
) -> AppChargeRecord:
    violations = Violations()
    check_amount(violations, "capped_amount", capped_amount)
    violations.raise_if_any()
    _check_grant(uow.session, caller)
    charge = load_charge(uow.session, caller.tenant, charge_id, app_id=caller.app_id, lock=True)
    _refuse_over_ceiling("capped_amount", capped_amount, charge.currency)
    if charge.kind != "usage" or charge.status != "active":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_CHARGE_NOT_ACTIVE_USAGE",
            "Only an active usage charge has a cap to raise",
            metadata={"status": charge.status, "kind": charge.kind},
        )
    if capped_amount <= charge.capped_amount:
        raise invalid_argument(
            "capped_amount", "CAP_NOT_INCREASED", "must be larger than the current cap"
        )
    charge.pending_capped_amount = capped_amount
    # The merchant has another 2 days to confirm the new cap.
    charge.expires_at = uow.now + CONFIRM_WITHIN
    _touch(charge, uow.now)
    emit(uow, charge, "app_charge.updated")
    return charge


def record_usage(
    uow: UnitOfWork,
    caller: AppCaller,
    charge_id: str,
    *,
    description: str,
    amount: int,
    idempotency_key: str,
) -> UsageRecordRecord:
    violations = Violations()
    check_text(violations, "usage_record.description", description, max_length=255, required=True)
    check_amount(violations, "usage_record.amount", amount)
    check_text(
        violations,
        "usage_record.idempotency_key",
        idempotency_key,
        max_length=100,
        required=True,
    )
    violations.raise_if_any()
    charge = load_charge(uow.session, caller.tenant, charge_id, app_id=caller.app_id, lock=True)
    existing = uow.session.scalar(
        select(UsageRecordRecord).where(
            UsageRecordRecord.merchant_id == charge.merchant_id,
            UsageRecordRecord.environment == charge.environment,
            UsageRecordRecord.charge_id == charge.id,
            UsageRecordRecord.idempotency_key == idempotency_key,
        )
    )
    if existing is not None:
        # Reported again (a retry): counted once, the first record answers.
        return existing
    _refuse_over_ceiling("usage_record.amount", amount, charge.currency)
    if charge.kind != "usage":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_CHARGE_NOT_USAGE",
            "Usage can only be recorded on a usage charge",
            metadata={"kind": charge.kind},
        )
    if charge.status != "active" or charge.period_start is None:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_CHARGE_NOT_ACTIVE",
            f"Usage can only be recorded on an active charge; this one is {charge.status}",
            metadata={"status": charge.status},
        )
    if charge.balance_used + amount > charge.capped_amount:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "USAGE_CAP_EXCEEDED",
            "This usage would pass the charge's capped amount for the period",
            metadata={
                "capped_amount": str(charge.capped_amount),
                "balance_used": str(charge.balance_used),
            },
        )
    charge.balance_used += amount
    _touch(charge, uow.now)
    record = UsageRecordRecord(
        id=new_id("aur"),
        merchant_id=charge.merchant_id,
        environment=charge.environment,
        charge_id=charge.id,
        description=description.strip(),
        amount=amount,
        idempotency_key=idempotency_key,
        balance_used=charge.balance_used,
        period_start=charge.period_start,
        created_at=uow.now,
    )
    uow.session.add(record)
    record_event(
        uow,
        merchant_id=charge.merchant_id,
        environment=charge.environment,
        type="app_usage.recorded",
        object_type="app_usage_record",
        object_id=record.id,
        object_version=1,
        data=snapshot(presenter.usage_pb(record)),
        app_id=charge.app_id,
    )
    return record


# --- the merchant's confirmation -----------------------------------------------------------


def _state(charge: AppChargeRecord, now: datetime) -> tuple[str, bool]:
    cap_increase = charge.status == "active" and charge.pending_capped_amount > 0
    if charge.status == "pending" or cap_increase:
        return ("expired" if charge.expires_at <= now else "open"), cap_increase
    if charge.status == "expired":
        return "expired", False
    return "decided", False


def _confirmation(session: Session, charge: AppChargeRecord, now: datetime) -> Confirmation:
    app = session.get(AppRecord, charge.app_id)
    partner = session.get(PartnerRecord, app.partner_id) if app else None
    merchant = session.get(MerchantRecord, charge.merchant_id)
    state, cap_increase = _state(charge, now)
    return Confirmation(
        charge=charge,
        app_name=app.name if app else "",
        partner_name=partner.name if partner else "",
        merchant_name=merchant.name if merchant else "",
        state=state,
        cap_increase=cap_increase,
    )


def confirmation(session: Session, merchant_id: str, charge_id: str, now: datetime) -> Confirmation:
    """What the signed-in merchant sees. Another merchant's charge: NOT_FOUND."""
    return _confirmation(session, _merchant_charge(session, merchant_id, charge_id), now)


def decide(
    uow: UnitOfWork, merchant_id: str, charge_id: str, *, approve: bool, settles_live: bool
) -> Confirmation:
    """The merchant's answer. Approving a live charge commits the merchant to
    paying it, so it is refused while nothing can collect live money
    (`settles_live`: the vault is a real acquirer's)."""
    charge = _merchant_charge(uow.session, merchant_id, charge_id, lock=True)
    state, cap_increase = _state(charge, uow.now)
    if state == "expired":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_CHARGE_EXPIRED",
            "This charge was not confirmed in time; the app must create it again",
        )
    if state != "open":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_CHARGE_ALREADY_DECIDED",
            f"This charge is already {charge.status}",
            metadata={"status": charge.status},
        )
    if cap_increase:
        if approve:
            charge.capped_amount = charge.pending_capped_amount
        charge.pending_capped_amount = 0
        _touch(charge, uow.now)
        # The charge was active already: a changed (or kept) cap is an update.
        emit(uow, charge, "app_charge.updated")
        return _confirmation(uow.session, charge, uow.now)
    if not approve:
        charge.status = "declined"
        _touch(charge, uow.now)
        emit(uow, charge, "app_charge.declined")
        return _confirmation(uow.session, charge, uow.now)
    refuse_unless_settles(settles_live, charge.environment)
    _activate(uow, charge)
    return _confirmation(uow.session, charge, uow.now)


def _activate(uow: UnitOfWork, charge: AppChargeRecord) -> None:
    tenant = Tenant(charge.merchant_id, charge.environment)
    now = uow.now
    start = now
    if charge.kind == "recurring":
        # Lock order: install, then charges (as create_charge).
        uow.session.scalar(
            select(InstallRecord).where(InstallRecord.id == charge.install_id).with_for_update()
        )
        current = _active_subscription(uow.session, tenant, charge.app_id, exclude=charge.id)
        if current is not None:
            if not charge.replacement:
                raise _refuse_second_subscription()
            charge.replaces_id = current.id
            if charge.replacement == "immediately":
                charge.credit = _invoice_replaced(uow, current, charge)
                current.status = "canceled"
                current.canceled_at = now
                _touch(current, now)
                emit(uow, current, "app_charge.canceled")
            else:
                current.cancel_at_period_end = True
                _touch(current, now)
                start = current.period_end or now
    charge.status = "active"
    charge.activated_at = now
    charge.period_start = start
    if charge.kind == "one_time":
        # Due at once: the next billing run invoices it.
        charge.period_end = start
    elif charge.kind == "usage":
        charge.period_end = start + USAGE_PERIOD
    elif charge.trial_days:
        charge.trial_ends_at = start + timedelta(days=charge.trial_days)
        charge.period_end = charge.trial_ends_at
    else:
        charge.period_end = start + INTERVALS[charge.interval]
    _touch(charge, now)
    emit(uow, charge, "app_charge.activated")


def _invoice_replaced(uow: UnitOfWork, current: AppChargeRecord, new: AppChargeRecord) -> int:
    """Invoices at once what the subscription replaced immediately owes up to now
    (billed in arrears, canceled here, it never reaches the billing run again) and
    returns the credit the new subscription gets for the unused time.

    Same currency: the current period at its full price, its unused part credited
    on the new subscription's next invoice. Another currency (no credit possible):
    only the used part. A period that ended before the billing run reached it costs
    its full price; a trial period, or one not yet started, costs nothing."""
    now = uow.now
    same_currency = current.currency == new.currency
    lines: list[dict[str, Any]] = []
    credit = 0
    for _ in range(MAX_PERIODS_PER_RUN):
        start, end = current.period_start, current.period_end
        if start is None or end is None or start > now:
            break
        unused = proration_credit(current, now)  # 0 for a trial or a period that ended
        if not (current.trial_ends_at is not None and end <= current.trial_ends_at):
            if same_currency:
                billed, until, credit = current.amount, end, unused
            else:
                billed, until = current.amount - unused, min(end, now)
            if billed > 0:
                lines.append(line(current, f"{current.name} ({days(start, until)})", billed))
                lines.extend(apply_credit(current, billed))
        if end > now:
            break
        current.period_start, current.period_end = end, end + INTERVALS[current.interval]
    if lines:
        create_invoice(
            uow, current.merchant_id, current.environment, current.app_id, current.currency, lines
        )
    if same_currency:
        # Proration credit the old plan had not used up yet moves to the new one.
        credit += current.credit
        current.credit = 0
    return credit


def proration_credit(current: AppChargeRecord, now: datetime) -> int:
    """The unused part of the current paid period, in minor units.

    Rounding rule: price × unused seconds ÷ period seconds, rounded DOWN to the
    minor unit (integer floor division), so a credit never exceeds what the
    period costs. A trial period or a period not yet started credits nothing."""
    start, end = current.period_start, current.period_end
    if start is None or end is None or end <= now or start > now:
        return 0
    if current.trial_ends_at is not None and end <= current.trial_ends_at:
        return 0
    period = int((end - start).total_seconds())
    unused = int((end - now).total_seconds())
    return current.amount * unused // period if period > 0 else 0


# --- time and the install --------------------------------------------------------------------


def expire_due(uow: UnitOfWork, *, charge_id: str | None = None) -> int:
    """Pending charges past their 2 days become expired; a cap increase past its
    2 days is dropped (the charge stays active at its old cap). Only the charge
    `charge_id` when given (the billing run does one charge per transaction)."""
    query = select(AppChargeRecord).where(
        AppChargeRecord.status.in_(LIVE_STATUSES), AppChargeRecord.expires_at <= uow.now
    )
    if charge_id is not None:
        query = query.where(AppChargeRecord.id == charge_id)
    due = list(uow.session.scalars(query.with_for_update(skip_locked=True)))
    expired = 0
    for charge in due:
        if charge.status == "pending":
            charge.status = "expired"
            _touch(charge, uow.now)
            emit(uow, charge, "app_charge.expired")
            expired += 1
        elif charge.pending_capped_amount:
            charge.pending_capped_amount = 0
            _touch(charge, uow.now)
            emit(uow, charge, "app_charge.updated")
    return expired


def freeze_for_install(uow: UnitOfWork, install_id: str, environment: str | None) -> int:
    """Called by installs when a grant is revoked (one environment) or the app
    is uninstalled (None: every environment): its live charges freeze."""
    query = select(AppChargeRecord).where(
        AppChargeRecord.install_id == install_id,
        AppChargeRecord.status.in_(LIVE_STATUSES),
    )
    if environment is not None:
        query = query.where(AppChargeRecord.environment == environment)
    frozen = 0
    for charge in uow.session.scalars(query.with_for_update()):
        freeze(uow, charge)
        frozen += 1
    return frozen


def freeze(uow: UnitOfWork, charge: AppChargeRecord) -> None:
    charge.status = "frozen"
    _touch(charge, uow.now)
    emit(uow, charge, "app_charge.frozen")
