"""installs, oauth, merchant sessions, events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:41:03.866868
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flint.common.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=40), nullable=False),
        sa.Column("object_version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cursor"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_tenant", ["merchant_id", "environment", "id"], unique=False
        )
        batch_op.create_index("ix_events_unsequenced", ["cursor", "id"], unique=False)

    op.create_table(
        "signin_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("at", flint.common.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("signin_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_signin_attempts_email", ["email", "at"], unique=False)
        batch_op.create_index("ix_signin_attempts_ip", ["client_ip", "at"], unique=False)

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=40), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("public_n", sa.Text(), nullable=False),
        sa.Column("public_e", sa.String(length=16), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("activates_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("retires_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "merchant_sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "installs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("uninstalled_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("installs", schema=None) as batch_op:
        batch_op.create_index("ix_installs_app", ["app_id", "id"], unique=False)
        batch_op.create_index("ix_installs_merchant", ["merchant_id", "id"], unique=False)
        batch_op.create_index(
            "uq_installs_active",
            ["merchant_id", "app_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "install_grants",
        sa.Column("install_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("granted_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["install_id"],
            ["installs.id"],
        ),
        sa.PrimaryKeyConstraint("install_id", "environment"),
    )
    op.create_table(
        "oauth_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("install_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2048), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("used_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("family_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["install_id"],
            ["installs.id"],
        ),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_table(
        "oauth_token_families",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("install_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=8), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.Column("revoke_reason", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["install_id"],
            ["installs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("oauth_token_families", schema=None) as batch_op:
        batch_op.create_index(
            "ix_token_families_install", ["install_id", "environment"], unique=False
        )

    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", flint.common.db.UTCDateTime(), nullable=False),
        sa.Column("used_at", flint.common.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["oauth_token_families.id"],
        ),
        sa.PrimaryKeyConstraint("token_hash"),
    )


def downgrade() -> None:

    op.drop_table("oauth_refresh_tokens")
    with op.batch_alter_table("oauth_token_families", schema=None) as batch_op:
        batch_op.drop_index("ix_token_families_install")

    op.drop_table("oauth_token_families")
    op.drop_table("oauth_codes")
    op.drop_table("install_grants")
    with op.batch_alter_table("installs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_installs_active",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index("ix_installs_merchant")
        batch_op.drop_index("ix_installs_app")

    op.drop_table("installs")
    op.drop_table("merchant_sessions")
    op.drop_table("signing_keys")
    with op.batch_alter_table("signin_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_signin_attempts_ip")
        batch_op.drop_index("ix_signin_attempts_email")

    op.drop_table("signin_attempts")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_unsequenced")
        batch_op.drop_index("ix_events_tenant")

    op.drop_table("events")
