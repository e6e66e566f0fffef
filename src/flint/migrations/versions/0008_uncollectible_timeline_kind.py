"""Order timeline: an invoice marked uncollectible has its own entry kind.

Before, it was recorded as `invoice_voided` (with the summary "Invoice … marked
uncollectible"); this gives those entries the kind they always meant.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE order_timeline SET kind = 'invoice_marked_uncollectible'"
        " WHERE kind = 'invoice_voided' AND summary LIKE '% marked uncollectible'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE order_timeline SET kind = 'invoice_voided'"
        " WHERE kind = 'invoice_marked_uncollectible'"
    )
