"""idempotency keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 13:04:46.495508
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claim_id", sa.String(length=32), nullable=False),
        sa.Column("locked_until", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "environment", "key"),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_expires_at")
    op.drop_table("idempotency_keys")
