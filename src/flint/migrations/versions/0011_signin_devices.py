"""Sign-in throttling per OWASP: trusted devices (a browser that signed in to an
account before keeps a device token) and the device of each attempt. Existing
attempts had no device ("").

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flint.common.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signin_devices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_success_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("signin_devices") as batch_op:
        batch_op.create_index("ix_signin_devices_merchant_id", ["merchant_id"], unique=False)
    with op.batch_alter_table("signin_attempts") as batch_op:
        batch_op.add_column(
            sa.Column("device_id", sa.String(length=40), nullable=False, server_default="")
        )
        batch_op.create_index("ix_signin_attempts_device", ["device_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signin_attempts") as batch_op:
        batch_op.drop_index("ix_signin_attempts_device")
        batch_op.drop_column("device_id")
    with op.batch_alter_table("signin_devices") as batch_op:
        batch_op.drop_index("ix_signin_devices_merchant_id")
    op.drop_table("signin_devices")
