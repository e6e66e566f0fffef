"""Per-caller API rate limits set by the operator (`flint admin set-rate-limit`).
A new table; callers without a row keep the documented defaults.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_overrides",
        sa.Column("subject", sa.String(length=160), primary_key=True),
        sa.Column("reads_per_second", sa.Integer(), nullable=False),
        sa.Column("writes_per_second", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_overrides")
