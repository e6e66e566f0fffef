"""API keys and client secrets: generated here, shown once, stored only as hashes.

Secrets are 240-bit random strings, so a plain SHA-256 is the right hash: it
lets a key be found by its hash in one indexed lookup, and there is nothing to
brute-force. (Passwords, chosen by people, use argon2 instead: see passwords.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import datetime

from sqlalchemy import Index, String, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from flint.common.db import Base
from flint.common.ids import new_id

_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40  # base62 characters, ~238 bits

KIND_ADMIN = "admin"
KIND_MERCHANT = "merchant"
KIND_PARTNER = "partner"
KIND_INTERNAL = "internal"

ADMIN_PREFIX = "fak_"
PARTNER_PREFIX = "pak_"
MERCHANT_PREFIXES = {"test": "sk_test_", "live": "sk_live_"}
INTERNAL_PREFIX = "fik_"
MERCHANT_SESSION_PREFIX = "fms_"
CLIENT_SECRET_PREFIX = "fcs_"  # noqa: S105 - a prefix, not a secret


class ApiKeyRecord(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # merchant or partner id; empty for admin keys.
    owner_id: Mapped[str] = mapped_column(String(40))
    # "test" or "live" for merchant keys, empty otherwise.
    environment: Mapped[str] = mapped_column(String(8))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    # Set when the key is revoked or rotated; the key stops working at this time.
    expires_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_owner", "kind", "owner_id", "environment"),)

    def is_active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


def generate_secret(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def looks_like_secret(value: str, prefix: str) -> bool:
    body = value[len(prefix) :]
    return (
        value.startswith(prefix)
        and len(body) == SECRET_LENGTH
        and all(ch in _ALPHABET for ch in body)
    )


def hint_for(secret: str, prefix: str) -> str:
    return f"{prefix}…{secret[-4:]}"


def issue_key(
    session: Session, *, kind: str, owner_id: str, environment: str, prefix: str, now: datetime
) -> tuple[ApiKeyRecord, str]:
    """Creates a key and returns it with its secret, which is not stored."""
    secret = generate_secret(prefix)
    record = ApiKeyRecord(
        id=new_id("key"),
        kind=kind,
        owner_id=owner_id,
        environment=environment,
        secret_hash=hash_secret(secret),
        hint=hint_for(secret, prefix),
        created_at=now,
        expires_at=None,
    )
    session.add(record)
    return record, secret


def expire_active_keys(
    session: Session, *, kind: str, owner_id: str, environment: str, at: datetime
) -> None:
    """Makes every still-working key of an owner stop working at `at`."""
    session.execute(
        update(ApiKeyRecord)
        .where(
            ApiKeyRecord.kind == kind,
            ApiKeyRecord.owner_id == owner_id,
            ApiKeyRecord.environment == environment,
            or_(ApiKeyRecord.expires_at.is_(None), ApiKeyRecord.expires_at > at),
        )
        .values(expires_at=at)
    )


def expire_key(session: Session, key_id: str, at: datetime) -> None:
    session.execute(
        update(ApiKeyRecord)
        .where(ApiKeyRecord.id == key_id, ApiKeyRecord.expires_at.is_(None))
        .values(expires_at=at)
    )


def active_keys(session: Session, *, kind: str, owner_id: str, now: datetime) -> list[ApiKeyRecord]:
    rows = session.scalars(
        select(ApiKeyRecord)
        .where(ApiKeyRecord.kind == kind, ApiKeyRecord.owner_id == owner_id)
        .order_by(ApiKeyRecord.environment, ApiKeyRecord.id)
    )
    return [row for row in rows if row.is_active(now)]
