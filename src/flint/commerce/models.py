"""Commerce tables. Every one carries merchant_id and environment, and its
indexes lead with them (DESIGN.md §4: the data shards by merchant)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base

LineItems = list[dict[str, Any]]


class OrderRecord(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(24))
    fulfillment_status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    line_items: Mapped[LineItems] = mapped_column(JSON)
    subtotal: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    amount_paid: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger)
    # Refunds pending or succeeded. The CHECK below is what makes "never more
    # than refundable" hold under any concurrency, on both databases.
    amount_refund_reserved: Mapped[int] = mapped_column(BigInteger)
    customer_email: Mapped[str] = mapped_column(String(254))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    canceled_at: Mapped[datetime | None]
    fulfilled_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(
            "amount_refund_reserved >= 0 AND amount_refund_reserved <= amount_paid",
            name="ck_orders_refundable",
        ),
        Index("ix_orders_tenant", "merchant_id", "environment", "id"),
        Index("ix_orders_tenant_email", "merchant_id", "environment", "customer_email", "id"),
    )


class OrderNoteRecord(Base):
    __tablename__ = "order_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(String(2000))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(40))
    actor_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_order_notes_order", "merchant_id", "environment", "order_id"),)


class TimelineRecord(Base):
    """One semantic step of an order's workflow."""

    __tablename__ = "order_timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(40))
    actor_name: Mapped[str] = mapped_column(String(200))
    object_id: Mapped[str] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_order_timeline_order", "merchant_id", "environment", "order_id"),)


class CheckoutSessionRecord(Base):
    __tablename__ = "checkout_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(String(40))
    payment_link_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    success_url: Mapped[str] = mapped_column(String(2048))
    cancel_url: Mapped[str] = mapped_column(String(2048))
    customer_email: Mapped[str] = mapped_column(String(254))
    expires_at: Mapped[datetime]
    payment_id: Mapped[str] = mapped_column(String(40))
    # A payment attempt holds the session until it finishes (or the lease ends),
    # so concurrent submissions cannot both charge the card.
    attempt_id: Mapped[str] = mapped_column(String(40))
    attempt_until: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_checkout_sessions_tenant", "merchant_id", "environment", "id"),
        Index("ix_checkout_sessions_order", "merchant_id", "environment", "order_id"),
        Index("ix_checkout_sessions_due", "status", "expires_at"),
    )


class PaymentRecord(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(String(40))
    checkout_session_id: Mapped[str] = mapped_column(String(40))
    invoice_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    decline_code: Mapped[str] = mapped_column(String(40))
    failure_message: Mapped[str] = mapped_column(String(200))
    card_brand: Mapped[str] = mapped_column(String(16))
    card_last4: Mapped[str] = mapped_column(String(4))
    processor_reference: Mapped[str] = mapped_column(String(64))
    amount_refunded: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_payments_tenant", "merchant_id", "environment", "id"),
        Index("ix_payments_order", "merchant_id", "environment", "order_id"),
    )


class RefundRecord(Base):
    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(String(40))
    payment_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str] = mapped_column(String(200))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_refunds_tenant", "merchant_id", "environment", "id"),
        Index("ix_refunds_order", "merchant_id", "environment", "order_id"),
    )


class PaymentLinkRecord(Base):
    __tablename__ = "payment_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    line_items: Mapped[LineItems] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool]
    success_url: Mapped[str] = mapped_column(String(2048))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_payment_links_tenant", "merchant_id", "environment", "id"),)


class InvoiceRecord(Base):
    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    number: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16))
    customer_email: Mapped[str] = mapped_column(String(254))
    line_items: Mapped[LineItems] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    amount_paid: Mapped[int] = mapped_column(BigInteger)
    due_date: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[str] = mapped_column(String(40))
    payment_id: Mapped[str] = mapped_column(String(40))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    attempt_id: Mapped[str] = mapped_column(String(40))
    attempt_until: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finalized_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_invoices_tenant", "merchant_id", "environment", "id"),
        Index("ix_invoices_order", "merchant_id", "environment", "order_id"),
    )


class InvoiceCounterRecord(Base):
    """The next invoice number of a merchant in an environment."""

    __tablename__ = "invoice_counters"

    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    environment: Mapped[str] = mapped_column(String(8), primary_key=True)
    next_number: Mapped[int] = mapped_column(Integer)
