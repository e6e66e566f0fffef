"""Background jobs note the items they failed on (retried with backoff, then set
aside for the operator), so one bad row no longer stops a whole sweep. A new,
empty table: no existing rows to migrate.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flint.common.db import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_failures",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(200), primary_key=True),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("first_failed_at", UTCDateTime(), nullable=False),
        sa.Column("last_failed_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_job_failures_status", "job_failures", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_job_failures_status", table_name="job_failures")
    op.drop_table("job_failures")
