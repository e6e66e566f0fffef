"""App billing objects as the API shows them (and as their events carry them)."""

from __future__ import annotations

from flint.billing.models import AppChargeRecord, AppInvoiceRecord, UsageRecordRecord
from flint.billing.v1 import billing_service_pb2 as pb
from flint.commerce.presenter import ENVIRONMENTS, public_url
from flint.server.convert import timestamp

KINDS: dict[str, pb.AppChargeKind.ValueType] = {
    "one_time": pb.APP_CHARGE_KIND_ONE_TIME,
    "recurring": pb.APP_CHARGE_KIND_RECURRING,
    "usage": pb.APP_CHARGE_KIND_USAGE,
}
STATUSES: dict[str, pb.AppChargeStatus.ValueType] = {
    "pending": pb.APP_CHARGE_STATUS_PENDING,
    "active": pb.APP_CHARGE_STATUS_ACTIVE,
    "declined": pb.APP_CHARGE_STATUS_DECLINED,
    "expired": pb.APP_CHARGE_STATUS_EXPIRED,
    "frozen": pb.APP_CHARGE_STATUS_FROZEN,
    "canceled": pb.APP_CHARGE_STATUS_CANCELED,
}
INTERVALS: dict[str, pb.BillingInterval.ValueType] = {
    "": pb.BILLING_INTERVAL_UNSPECIFIED,
    "every_30_days": pb.BILLING_INTERVAL_EVERY_30_DAYS,
    "annual": pb.BILLING_INTERVAL_ANNUAL,
}
REPLACEMENTS: dict[str, pb.ReplacementBehavior.ValueType] = {
    "": pb.REPLACEMENT_BEHAVIOR_UNSPECIFIED,
    "immediately": pb.REPLACEMENT_BEHAVIOR_IMMEDIATELY,
    "at_period_end": pb.REPLACEMENT_BEHAVIOR_AT_PERIOD_END,
}
INVOICE_STATUSES: dict[str, pb.AppInvoiceStatus.ValueType] = {
    "open": pb.APP_INVOICE_STATUS_OPEN,
    "paid": pb.APP_INVOICE_STATUS_PAID,
    "uncollectible": pb.APP_INVOICE_STATUS_UNCOLLECTIBLE,
}


def confirmation_url(charge_id: str) -> str:
    return f"{public_url()}/hosted/billing/charges/{charge_id}"


def charge_pb(charge: AppChargeRecord, app_name: str = "") -> pb.AppCharge:
    return pb.AppCharge(
        id=charge.id,
        environment=ENVIRONMENTS[charge.environment],
        app_id=charge.app_id,
        app_name=app_name,
        kind=KINDS[charge.kind],
        status=STATUSES[charge.status],
        name=charge.name,
        currency=charge.currency,
        amount=charge.amount,
        interval=INTERVALS[charge.interval],
        trial_days=charge.trial_days,
        capped_amount=charge.capped_amount,
        pending_capped_amount=charge.pending_capped_amount,
        balance_used=charge.balance_used,
        replacement_behavior=REPLACEMENTS[charge.replacement],
        return_url=charge.return_url,
        confirmation_url=confirmation_url(charge.id),
        test=charge.environment == "test",
        trial_end_time=timestamp(charge.trial_ends_at),
        current_period_start=timestamp(charge.period_start),
        current_period_end=timestamp(charge.period_end),
        expire_time=timestamp(charge.expires_at),
        create_time=timestamp(charge.created_at),
        activate_time=timestamp(charge.activated_at),
        cancel_time=timestamp(charge.canceled_at),
        cancel_at_period_end=charge.cancel_at_period_end,
        replaces_charge_id=charge.replaces_id,
        credit=charge.credit,
        version=charge.version,
    )


def usage_pb(record: UsageRecordRecord) -> pb.UsageRecord:
    return pb.UsageRecord(
        id=record.id,
        app_charge_id=record.charge_id,
        description=record.description,
        amount=record.amount,
        idempotency_key=record.idempotency_key,
        balance_used=record.balance_used,
        create_time=timestamp(record.created_at),
    )


def invoice_pb(invoice: AppInvoiceRecord) -> pb.AppInvoice:
    return pb.AppInvoice(
        id=invoice.id,
        environment=ENVIRONMENTS[invoice.environment],
        app_id=invoice.app_id,
        status=INVOICE_STATUSES[invoice.status],
        currency=invoice.currency,
        lines=[
            pb.AppInvoiceLine(
                description=line["description"],
                amount=line["amount"],
                app_charge_id=line["app_charge_id"],
            )
            for line in invoice.lines
        ],
        total=invoice.total,
        amount_paid=invoice.amount_paid,
        attempt_count=invoice.attempt_count,
        next_attempt_time=timestamp(invoice.next_attempt_at),
        decline_code=invoice.decline_code,
        test=invoice.environment == "test",
        create_time=timestamp(invoice.created_at),
        paid_time=timestamp(invoice.paid_at),
        version=invoice.version,
    )
