"""webhooks: endpoints, their secrets, payloads, deliveries and attempts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 13:34:12.093492
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_payloads",
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("install_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "install_id"),
    )
    with op.batch_alter_table("webhook_payloads", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_payloads_created", ["created_at"], unique=False)

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("enabled_events", sa.JSON(), nullable=False),
        sa.Column("environments", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("disabled_reason", sa.String(length=16), nullable=False),
        sa.Column("disabled_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("failing_since", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("deleted_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_endpoints_app", ["app_id", "id"], unique=False)
        batch_op.create_index(
            "ix_webhook_endpoints_partner", ["partner_id", "app_id", "id"], unique=False
        )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("install_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("lease_until", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("completed_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
        ),
        sa.ForeignKeyConstraint(
            ["event_id", "install_id"],
            ["webhook_payloads.event_id", "webhook_payloads.install_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_app", ["partner_id", "app_id", "id"], unique=False
        )
        batch_op.create_index("ix_webhook_deliveries_completed", ["completed_at"], unique=False)
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index("ix_webhook_deliveries_endpoint", ["endpoint_id", "id"], unique=False)
        batch_op.create_index(
            "ix_webhook_deliveries_event", ["event_id", "endpoint_id"], unique=False
        )
        batch_op.create_index(
            "uq_webhook_deliveries_fanout",
            ["endpoint_id", "event_id"],
            unique=True,
            sqlite_where=sa.text("origin = 'event'"),
            postgresql_where=sa.text("origin = 'event'"),
        )

    op.create_table(
        "webhook_endpoint_secrets",
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "version"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("started_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("finished_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
        ),
        sa.PrimaryKeyConstraint("delivery_id", "number"),
    )
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_attempts_endpoint", ["endpoint_id", "started_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_attempts_event", ["event_id", "endpoint_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_attempts_event")
        batch_op.drop_index("ix_webhook_attempts_endpoint")

    op.drop_table("webhook_attempts")
    op.drop_table("webhook_endpoint_secrets")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_webhook_deliveries_fanout",
            sqlite_where=sa.text("origin = 'event'"),
            postgresql_where=sa.text("origin = 'event'"),
        )
        batch_op.drop_index("ix_webhook_deliveries_event")
        batch_op.drop_index("ix_webhook_deliveries_endpoint")
        batch_op.drop_index("ix_webhook_deliveries_due")
        batch_op.drop_index("ix_webhook_deliveries_completed")
        batch_op.drop_index("ix_webhook_deliveries_app")

    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_endpoints_partner")
        batch_op.drop_index("ix_webhook_endpoints_app")

    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("webhook_payloads", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_payloads_created")

    op.drop_table("webhook_payloads")
