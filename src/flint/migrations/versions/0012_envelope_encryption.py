"""Secrets Flint reads back are sealed with a key-encryption key kept outside the
database (issue #13): token-signing private keys (plain PEM until now), webhook
signing secrets (Fernet under a key stored in `platform_keys`) and the platform
keys themselves. The in-database webhook key is removed.

Existing rows are converted, so this revision needs the KEK (`FLINT_KEK_FILE`
or `FLINT_KEK`) whenever the database already holds such rows; a fresh
database needs it only for the keys `flint migrate` creates afterwards.

The associated-data strings below are frozen copies of `platform_keys.aad`,
`signing.aad` and `webhooks.signing.aad` at this revision.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

import base64
import secrets

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet

from flint.common import envelope

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_WEBHOOK_KEY = "webhook_secrets"


def _platform_aad(name: str) -> str:
    return f"platform_key:{name}"


def _signing_aad(kid: str) -> str:
    return f"signing_key:{kid}"


def _webhook_aad(endpoint_id: str, version: int) -> str:
    return f"webhook_secret:{endpoint_id}:{version}"


def _has_rows(conn: sa.Connection, table: str) -> bool:
    return conn.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None  # noqa: S608


def upgrade() -> None:
    conn = op.get_bind()
    # Read the KEK before changing anything: without one this raises a one-line
    # KekError and leaves the database as it was.
    ring = None
    if any(_has_rows(conn, t) for t in ("platform_keys", "signing_keys")):
        ring = envelope.kek_ring()
    with op.batch_alter_table("platform_keys") as batch_op:
        batch_op.alter_column("value", type_=sa.Text(), existing_nullable=False)
    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.add_column(sa.Column("private_sealed", sa.Text(), nullable=True))

    if ring is not None:
        platform: dict[str, str] = {
            name: value
            for name, value in conn.execute(sa.text("SELECT name, value FROM platform_keys"))
        }
        webhook_key = platform.pop(_WEBHOOK_KEY, None)
        for name, value in platform.items():
            sealed = envelope.seal(base64.urlsafe_b64decode(value), _platform_aad(name), ring)
            conn.execute(
                sa.text("UPDATE platform_keys SET value = :v WHERE name = :n"),
                {"v": sealed, "n": name},
            )
        if webhook_key is not None:
            fernet = Fernet(base64.urlsafe_b64encode(base64.urlsafe_b64decode(webhook_key)))
            rows = conn.execute(
                sa.text("SELECT endpoint_id, version, ciphertext FROM webhook_endpoint_secrets")
            ).all()
            for endpoint_id, version, ciphertext in rows:
                secret = fernet.decrypt(ciphertext.encode())
                conn.execute(
                    sa.text(
                        "UPDATE webhook_endpoint_secrets SET ciphertext = :c "
                        "WHERE endpoint_id = :e AND version = :v"
                    ),
                    {
                        "c": envelope.seal(secret, _webhook_aad(endpoint_id, version), ring),
                        "e": endpoint_id,
                        "v": version,
                    },
                )
            conn.execute(sa.text("DELETE FROM platform_keys WHERE name = :n"), {"n": _WEBHOOK_KEY})
        for kid, pem in conn.execute(sa.text("SELECT kid, private_pem FROM signing_keys")).all():
            conn.execute(
                sa.text("UPDATE signing_keys SET private_sealed = :s WHERE kid = :k"),
                {"s": envelope.seal(pem.encode(), _signing_aad(kid), ring), "k": kid},
            )

    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.alter_column("private_sealed", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("private_pem")


def downgrade() -> None:
    conn = op.get_bind()
    ring = None
    if any(_has_rows(conn, t) for t in ("platform_keys", "signing_keys")):
        ring = envelope.kek_ring()
    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.add_column(sa.Column("private_pem", sa.Text(), nullable=True))
    if ring is not None:
        rows = conn.execute(sa.text("SELECT kid, private_sealed FROM signing_keys")).all()
        for kid, sealed in rows:
            pem = envelope.open_sealed(sealed, _signing_aad(kid), ring).decode()
            conn.execute(
                sa.text("UPDATE signing_keys SET private_pem = :p WHERE kid = :k"),
                {"p": pem, "k": kid},
            )
        webhook_key = secrets.token_bytes(32)
        fernet = Fernet(base64.urlsafe_b64encode(webhook_key))
        rows = conn.execute(
            sa.text("SELECT endpoint_id, version, ciphertext FROM webhook_endpoint_secrets")
        ).all()
        for endpoint_id, version, sealed in rows:
            secret = envelope.open_sealed(sealed, _webhook_aad(endpoint_id, version), ring)
            conn.execute(
                sa.text(
                    "UPDATE webhook_endpoint_secrets SET ciphertext = :c "
                    "WHERE endpoint_id = :e AND version = :v"
                ),
                {"c": fernet.encrypt(secret).decode(), "e": endpoint_id, "v": version},
            )
        platform = conn.execute(sa.text("SELECT name, value FROM platform_keys")).all()
        for name, sealed in platform:
            raw = envelope.open_sealed(sealed, _platform_aad(name), ring)
            conn.execute(
                sa.text("UPDATE platform_keys SET value = :v WHERE name = :n"),
                {"v": base64.urlsafe_b64encode(raw).decode(), "n": name},
            )
        if platform:
            conn.execute(
                sa.text(
                    "INSERT INTO platform_keys (name, value, created_at) "
                    "SELECT :n, :v, MIN(created_at) FROM platform_keys"
                ),
                {"n": _WEBHOOK_KEY, "v": base64.urlsafe_b64encode(webhook_key).decode()},
            )
    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.alter_column("private_pem", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("private_sealed")
    with op.batch_alter_table("platform_keys") as batch_op:
        batch_op.alter_column("value", type_=sa.String(200), existing_nullable=False)
