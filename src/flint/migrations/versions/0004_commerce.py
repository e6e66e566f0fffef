"""commerce

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 13:07:36.876268
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "checkout_sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("payment_link_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("success_url", sa.String(length=2048), nullable=False),
        sa.Column("cancel_url", sa.String(length=2048), nullable=False),
        sa.Column("customer_email", sa.String(length=254), nullable=False),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("attempt_id", sa.String(length=40), nullable=False),
        sa.Column("attempt_until", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("checkout_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_checkout_sessions_due", ["status", "expires_at"], unique=False)
        batch_op.create_index(
            "ix_checkout_sessions_order", ["merchant_id", "environment", "order_id"], unique=False
        )
        batch_op.create_index(
            "ix_checkout_sessions_tenant", ["merchant_id", "environment", "id"], unique=False
        )

    op.create_table(
        "invoice_counters",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("next_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "environment"),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("customer_email", sa.String(length=254), nullable=False),
        sa.Column("line_items", sa.JSON(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("due_date", sa.String(length=10), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("attempt_id", sa.String(length=40), nullable=False),
        sa.Column("attempt_until", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("finalized_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("paid_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoices_order", ["merchant_id", "environment", "order_id"], unique=False
        )
        batch_op.create_index(
            "ix_invoices_tenant", ["merchant_id", "environment", "id"], unique=False
        )

    op.create_table(
        "order_notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("text", sa.String(length=2000), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=40), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("order_notes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_order_notes_order", ["merchant_id", "environment", "order_id"], unique=False
        )

    op.create_table(
        "order_timeline",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=40), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=False),
        sa.Column("object_id", sa.String(length=40), nullable=False),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("order_timeline", schema=None) as batch_op:
        batch_op.create_index(
            "ix_order_timeline_order", ["merchant_id", "environment", "order_id"], unique=False
        )

    op.create_table(
        "orders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("fulfillment_status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("line_items", sa.JSON(), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("amount_refund_reserved", sa.BigInteger(), nullable=False),
        sa.Column("customer_email", sa.String(length=254), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("canceled_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("fulfilled_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "amount_refund_reserved >= 0 AND amount_refund_reserved <= amount_paid",
            name="ck_orders_refundable",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_tenant", ["merchant_id", "environment", "id"], unique=False
        )
        batch_op.create_index(
            "ix_orders_tenant_email",
            ["merchant_id", "environment", "customer_email", "id"],
            unique=False,
        )

    op.create_table(
        "payment_links",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("line_items", sa.JSON(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("success_url", sa.String(length=2048), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("payment_links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_links_tenant", ["merchant_id", "environment", "id"], unique=False
        )

    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("checkout_session_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decline_code", sa.String(length=40), nullable=False),
        sa.Column("failure_message", sa.String(length=200), nullable=False),
        sa.Column("card_brand", sa.String(length=16), nullable=False),
        sa.Column("card_last4", sa.String(length=4), nullable=False),
        sa.Column("processor_reference", sa.String(length=64), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payments_order", ["merchant_id", "environment", "order_id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_tenant", ["merchant_id", "environment", "id"], unique=False
        )

    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=200), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_refunds_order", ["merchant_id", "environment", "order_id"], unique=False
        )
        batch_op.create_index(
            "ix_refunds_tenant", ["merchant_id", "environment", "id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_tenant")
        batch_op.drop_index("ix_refunds_order")

    op.drop_table("refunds")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_tenant")
        batch_op.drop_index("ix_payments_order")

    op.drop_table("payments")
    with op.batch_alter_table("payment_links", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_links_tenant")

    op.drop_table("payment_links")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_tenant_email")
        batch_op.drop_index("ix_orders_tenant")

    op.drop_table("orders")
    with op.batch_alter_table("order_timeline", schema=None) as batch_op:
        batch_op.drop_index("ix_order_timeline_order")

    op.drop_table("order_timeline")
    with op.batch_alter_table("order_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_order_notes_order")

    op.drop_table("order_notes")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_tenant")
        batch_op.drop_index("ix_invoices_order")

    op.drop_table("invoices")
    op.drop_table("invoice_counters")
    with op.batch_alter_table("checkout_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_checkout_sessions_tenant")
        batch_op.drop_index("ix_checkout_sessions_order")
        batch_op.drop_index("ix_checkout_sessions_due")

    op.drop_table("checkout_sessions")
