"""Migration 0012 seals the secrets a 0009 database kept in the clear (signing
keys as PEM, platform keys as base64) or under an in-database key (webhook
secrets, Fernet), and removes that key."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flint.accounts.models import PartnerRecord
from flint.apps.models import AppRecord
from flint.common import envelope, platform_keys
from flint.common.db import UTCDateTime
from flint.common.envelope import KekError
from flint.installs import signing
from flint.webhooks import signing as webhook_signing
from flint.webhooks.models import WebhookEndpointRecord
from tests.migrations.test_schema import database_at

_OLD_SIGNING_KEYS = sa.table(
    "signing_keys",
    sa.column("kid"),
    sa.column("private_pem"),
    sa.column("public_n"),
    sa.column("public_e"),
    sa.column("created_at", UTCDateTime()),
    sa.column("activates_at", UTCDateTime()),
    sa.column("retires_at", UTCDateTime()),
)
_OLD_PLATFORM_KEYS = sa.table(
    "platform_keys", sa.column("name"), sa.column("value"), sa.column("created_at", UTCDateTime())
)
_SECRETS = sa.table(
    "webhook_endpoint_secrets",
    sa.column("endpoint_id"),
    sa.column("version"),
    sa.column("ciphertext"),
    sa.column("created_at", UTCDateTime()),
    sa.column("expires_at", UTCDateTime()),
)


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _fill_0009(connection: sa.Connection, now: datetime) -> dict[str, object]:
    """Rows as a 0009 database holds them; returns the plaintexts."""
    page_key, idem_key, webhook_key = (secrets.token_bytes(32) for _ in range(3))
    for name, key in (
        ("page_tokens", page_key),
        ("idempotency", idem_key),
        ("webhook_secrets", webhook_key),
    ):
        connection.execute(
            sa.insert(_OLD_PLATFORM_KEYS).values(
                name=name, value=base64.urlsafe_b64encode(key).decode(), created_at=now
            )
        )
    pem = _pem()
    connection.execute(
        sa.insert(_OLD_SIGNING_KEYS).values(
            kid="k_old",
            private_pem=pem,
            public_n="n",
            public_e="AQAB",
            created_at=now,
            activates_at=now,
            retires_at=None,
        )
    )
    connection.execute(
        sa.insert(PartnerRecord.__table__).values(id="par_1", name="P", created_at=now)
    )
    connection.execute(
        sa.insert(AppRecord.__table__).values(
            id="app_1",
            partner_id="par_1",
            name="App",
            description="",
            icon_url="",
            support_url="",
            privacy_url="",
            redirect_uris=[],
            requested_scopes=[],
            status="active",
            client_id="ca_1",
            client_secret_hash="x",
            created_at=now,
            updated_at=now,
        )
    )
    connection.execute(
        sa.insert(WebhookEndpointRecord.__table__).values(
            id="we_1",
            app_id="app_1",
            partner_id="par_1",
            url="https://example.com/hooks",
            description="",
            enabled_events=["*"],
            environments=["test"],
            status="enabled",
            disabled_reason="",
            version=1,
            created_at=now,
            updated_at=now,
        )
    )
    whsec = webhook_signing.new_secret()
    fernet = Fernet(base64.urlsafe_b64encode(webhook_key))
    connection.execute(
        sa.insert(_SECRETS).values(
            endpoint_id="we_1",
            version=1,
            ciphertext=fernet.encrypt(whsec.encode()).decode(),
            created_at=now,
            expires_at=None,
        )
    )
    return {"page_tokens": page_key, "idempotency": idem_key, "pem": pem, "whsec": whsec}


def test_existing_plaintext_secrets_are_sealed_and_the_database_key_removed(tmp_path):
    now = datetime.now(UTC)
    with database_at(tmp_path, "0009") as (db, config):
        with db.engine.begin() as connection:
            plain = _fill_0009(connection, now)
        command.upgrade(config, "0012")
        with db.engine.connect() as connection:
            keys = dict(connection.execute(sa.text("SELECT name, value FROM platform_keys")).all())
            (sealed_pem,) = connection.execute(
                sa.text("SELECT private_sealed FROM signing_keys WHERE kid = 'k_old'")
            ).scalars()
            (sealed_whsec,) = connection.execute(
                sa.text("SELECT ciphertext FROM webhook_endpoint_secrets")
            ).scalars()
            columns = {c["name"] for c in sa.inspect(connection).get_columns("signing_keys")}
        assert set(keys) == {"page_tokens", "idempotency"}  # the webhook key is gone
        assert "private_pem" not in columns
        ring = envelope.kek_ring()
        for name in ("page_tokens", "idempotency"):
            assert envelope.kek_id_of(keys[name]) == ring.current
            assert envelope.open_sealed(keys[name], platform_keys.aad(name)) == plain[name]
        assert envelope.open_sealed(sealed_pem, signing.aad("k_old")).decode() == plain["pem"]
        assert webhook_signing.decrypt(sealed_whsec, "we_1", 1) == plain["whsec"]
        assert "PRIVATE KEY" not in sealed_pem
        assert "whsec_" not in sealed_whsec

        # And back: the downgrade restores the 0009 shapes from the sealed values.
        command.downgrade(config, "0009")
        with db.engine.connect() as connection:
            pem = connection.execute(sa.text("SELECT private_pem FROM signing_keys")).scalar_one()
            old_keys = dict(
                connection.execute(sa.text("SELECT name, value FROM platform_keys")).all()
            )
            ciphertext = connection.execute(
                sa.text("SELECT ciphertext FROM webhook_endpoint_secrets")
            ).scalar_one()
        assert pem == plain["pem"]
        assert base64.urlsafe_b64decode(old_keys["page_tokens"]) == plain["page_tokens"]
        webhook_key = base64.urlsafe_b64decode(old_keys["webhook_secrets"])
        fernet = Fernet(base64.urlsafe_b64encode(webhook_key))
        assert fernet.decrypt(ciphertext.encode()).decode() == plain["whsec"]


def test_the_migration_refuses_clearly_without_a_kek(tmp_path, monkeypatch: pytest.MonkeyPatch):
    now = datetime.now(UTC)
    with database_at(tmp_path, "0009") as (db, config):
        with db.engine.begin() as connection:
            _fill_0009(connection, now)
        monkeypatch.delenv(envelope.KEK_ENV, raising=False)
        monkeypatch.delenv(envelope.KEK_FILE_ENV, raising=False)
        with pytest.raises(KekError, match="no key-encryption key"):
            command.upgrade(config, "0012")
        # Nothing half-done: the plaintext key is still there to migrate later.
        with db.engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("signing_keys")}
        assert "private_pem" in columns
        assert "private_sealed" not in columns
