"""billing: app charges, usage records, app invoices and the card on file

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_charges",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("install_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("interval", sa.String(length=16), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("trial_ends_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("capped_amount", sa.BigInteger(), nullable=False),
        sa.Column("pending_capped_amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_used", sa.BigInteger(), nullable=False),
        sa.Column("replacement", sa.String(length=16), nullable=False),
        sa.Column("replaces_id", sa.String(length=40), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("credit", sa.BigInteger(), nullable=False),
        sa.Column("return_url", sa.String(length=2048), nullable=False),
        sa.Column("period_start", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("period_end", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("activated_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("canceled_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_app_charges_tenant", "app_charges", ["merchant_id", "environment", "id"], unique=False
    )
    op.create_index(
        "ix_app_charges_app",
        "app_charges",
        ["merchant_id", "environment", "app_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_app_charges_partner", "app_charges", ["app_id", "environment", "status"], unique=False
    )
    op.create_index("ix_app_charges_due", "app_charges", ["status", "period_end"], unique=False)
    op.create_index("ix_app_charges_pending", "app_charges", ["status", "expires_at"], unique=False)
    op.create_table(
        "app_usage_records",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("charge_id", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("balance_used", sa.BigInteger(), nullable=False),
        sa.Column("period_start", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "merchant_id", "environment", "charge_id", "idempotency_key", name="uq_app_usage_key"
        ),
    )
    op.create_table(
        "app_invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("decline_code", sa.String(length=40), nullable=False),
        sa.Column("processor_reference", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("paid_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_app_invoices_tenant", "app_invoices", ["merchant_id", "environment", "id"], unique=False
    )
    op.create_index(
        "ix_app_invoices_app", "app_invoices", ["app_id", "environment", "status"], unique=False
    )
    op.create_index(
        "ix_app_invoices_due", "app_invoices", ["status", "next_attempt_at"], unique=False
    )
    op.create_table(
        "billing_cards",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("brand", sa.String(length=16), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id"),
    )


def downgrade() -> None:
    op.drop_table("billing_cards")
    op.drop_index("ix_app_invoices_due", table_name="app_invoices")
    op.drop_index("ix_app_invoices_app", table_name="app_invoices")
    op.drop_index("ix_app_invoices_tenant", table_name="app_invoices")
    op.drop_table("app_invoices")
    op.drop_table("app_usage_records")
    op.drop_index("ix_app_charges_pending", table_name="app_charges")
    op.drop_index("ix_app_charges_due", table_name="app_charges")
    op.drop_index("ix_app_charges_partner", table_name="app_charges")
    op.drop_index("ix_app_charges_app", table_name="app_charges")
    op.drop_index("ix_app_charges_tenant", table_name="app_charges")
    op.drop_table("app_charges")
