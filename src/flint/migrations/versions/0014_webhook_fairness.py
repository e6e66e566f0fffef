"""Fair webhook delivery: an endpoint's circuit breaker (`paused_until`) and an
index of each endpoint's pending deliveries, which claims rank and count.
Existing endpoints start unpaused (NULL); the index covers existing rows.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch_op:
        batch_op.add_column(sa.Column("paused_until", flint.common.db.UTCDateTime(), nullable=True))
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    with op.batch_alter_table("webhook_endpoints") as batch_op:
        batch_op.drop_column("paused_until")
