"""Token families remember whether the client authenticated with its secret, so
their refresh tokens then need the secret too (RFC 6749 §6). Existing families
keep today's behaviour (refreshable with the client_id alone).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_token_families") as batch_op:
        batch_op.add_column(
            sa.Column(
                "client_authenticated", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_token_families") as batch_op:
        batch_op.drop_column("client_authenticated")
