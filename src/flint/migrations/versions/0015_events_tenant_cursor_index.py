"""Events are read per tenant in cursor order (lists, streams, a stream's own
starting position): an index on (merchant_id, environment, cursor) serves them
without scanning the tenant's events, and leads with the tenant like every
other tenant index.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_tenant_cursor", "events", ["merchant_id", "environment", "cursor"])


def downgrade() -> None:
    op.drop_index("ix_events_tenant_cursor", table_name="events")
