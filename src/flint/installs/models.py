from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base


class InstallRecord(Base):
    __tablename__ = "installs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40), ForeignKey("merchants.id"))
    app_id: Mapped[str] = mapped_column(String(40), ForeignKey("apps.id"))
    # "active" or "uninstalled".
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    uninstalled_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_installs_merchant", "merchant_id", "id"),
        Index("ix_installs_app", "app_id", "id"),
        # At most one active install of an app per merchant.
        Index(
            "uq_installs_active",
            "merchant_id",
            "app_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )


class GrantRecord(Base):
    """What one environment of an install allows."""

    __tablename__ = "install_grants"

    install_id: Mapped[str] = mapped_column(String(40), ForeignKey("installs.id"), primary_key=True)
    environment: Mapped[str] = mapped_column(String(8), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # "active", "revoked" or "uninstalled".
    status: Mapped[str] = mapped_column(String(16))
    granted_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuthCodeRecord(Base):
    __tablename__ = "oauth_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(40))
    install_id: Mapped[str] = mapped_column(String(40), ForeignKey("installs.id"))
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    code_challenge: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The token family the code was exchanged for, revoked if the code is replayed.
    family_id: Mapped[str | None] = mapped_column(String(40))


class TokenFamilyRecord(Base):
    """Every access and refresh token descending from one authorization code.
    Revoking the family revokes them all."""

    __tablename__ = "oauth_token_families"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(40))
    install_id: Mapped[str] = mapped_column(String(40), ForeignKey("installs.id"))
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str] = mapped_column(String(40))
    # Issued to a client that authenticated with its client secret: its refresh
    # tokens then work only with that secret too (RFC 6749 §6).
    client_authenticated: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (Index("ix_token_families_install", "install_id", "environment"),)


class RefreshTokenRecord(Base):
    __tablename__ = "oauth_refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(40), ForeignKey("oauth_token_families.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # Set when exchanged for a new one; presenting it again is a replay.
    used_at: Mapped[datetime | None]


class SigningKeyRecord(Base):
    """RSA keys that sign access tokens. A new key is published (JWKS) before it
    signs; an old one stays published until the tokens it signed expire."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The PKCS#8 PEM private key, sealed (`envelope.seal`) with `signing.aad(kid)`.
    private_sealed: Mapped[str] = mapped_column(Text)
    public_n: Mapped[str] = mapped_column(Text)
    public_e: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    activates_at: Mapped[datetime]
    retires_at: Mapped[datetime | None]
