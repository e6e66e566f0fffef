"""App billing tables. Every one leads with merchant_id and environment, like the
commerce tables (DESIGN.md §4), except the card on file, which belongs to the
merchant (it pays the platform for live charges only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base


class AppChargeRecord(Base):
    __tablename__ = "app_charges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    app_id: Mapped[str] = mapped_column(String(40))
    install_id: Mapped[str] = mapped_column(String(40))
    # one_time, recurring, usage.
    kind: Mapped[str] = mapped_column(String(16))
    # pending, active, declined, expired, frozen, canceled.
    status: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    # every_30_days or annual (recurring); every_30_days (usage); "" (one-time).
    interval: Mapped[str] = mapped_column(String(16))
    trial_days: Mapped[int] = mapped_column(Integer)
    trial_ends_at: Mapped[datetime | None]
    capped_amount: Mapped[int] = mapped_column(BigInteger)
    pending_capped_amount: Mapped[int] = mapped_column(BigInteger)
    balance_used: Mapped[int] = mapped_column(BigInteger)
    # "", immediately, at_period_end.
    replacement: Mapped[str] = mapped_column(String(16))
    replaces_id: Mapped[str] = mapped_column(String(40))
    cancel_at_period_end: Mapped[bool]
    # Proration credit still owed to the merchant on this charge's invoices.
    credit: Mapped[int] = mapped_column(BigInteger)
    return_url: Mapped[str] = mapped_column(String(2048))
    # The period being accrued; None once a one-time charge is invoiced.
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    canceled_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_app_charges_tenant", "merchant_id", "environment", "id"),
        Index("ix_app_charges_app", "merchant_id", "environment", "app_id", "status"),
        Index("ix_app_charges_partner", "app_id", "environment", "status"),
        Index("ix_app_charges_due", "status", "period_end"),
        Index("ix_app_charges_pending", "status", "expires_at"),
    )


class UsageRecordRecord(Base):
    __tablename__ = "app_usage_records"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    charge_id: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(100))
    # The charge's balance after this record.
    balance_used: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime]
    created_at: Mapped[datetime]

    __table_args__ = (
        # A repeated report counts once, whatever the concurrency (both databases).
        UniqueConstraint(
            "merchant_id", "environment", "charge_id", "idempotency_key", name="uq_app_usage_key"
        ),
    )


class AppInvoiceRecord(Base):
    """The platform billing a merchant for one app. Mirrors commerce invoices
    (line items, total, paid time) but is the platform's, not the merchant's."""

    __tablename__ = "app_invoices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    app_id: Mapped[str] = mapped_column(String(40))
    # open, paid, uncollectible.
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(BigInteger)
    amount_paid: Mapped[int] = mapped_column(BigInteger)
    attempt_count: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    decline_code: Mapped[str] = mapped_column(String(40))
    processor_reference: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_app_invoices_tenant", "merchant_id", "environment", "id"),
        Index("ix_app_invoices_app", "app_id", "environment", "status"),
        Index("ix_app_invoices_due", "status", "next_attempt_at"),
    )


class BillingCardRecord(Base):
    """The merchant's card on file: brand, last four, expiry and the vault's
    token. Never the number or the CVC."""

    __tablename__ = "billing_cards"

    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    brand: Mapped[str] = mapped_column(String(16))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
