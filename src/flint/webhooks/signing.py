"""Signing secrets and Standard Webhooks signatures.

A secret is `whsec_` + base64 of 32 random bytes. It is shown once and stored
encrypted with the platform's webhook key (Fernet), since signing needs the
secret itself: a hash would not do. The signature of a delivery is
`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the secret's
decoded bytes; during a rotation every active secret signs, space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from flint.common.platform_keys import WEBHOOK_SECRETS_KEY, platform_key

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _fernet(session: Session) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(platform_key(session, WEBHOOK_SECRETS_KEY)))


def encrypt(session: Session, secret: str) -> str:
    return _fernet(session).encrypt(secret.encode()).decode()


def decrypt(session: Session, ciphertext: str) -> str:
    return _decrypt(platform_key(session, WEBHOOK_SECRETS_KEY), ciphertext)


@lru_cache(maxsize=4096)
def _decrypt(key: bytes, ciphertext: str) -> str:
    # Every delivery signs with its endpoint's secrets: decrypting them once per
    # stored ciphertext (a rotation stores a new one) keeps Fernet off the hot path.
    return Fernet(base64.urlsafe_b64encode(key)).decrypt(ciphertext.encode()).decode()


@lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    # Decoded once per secret, not once per attempt.
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,…` signature over the exact bytes sent."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    active_secrets: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, message_id, timestamp, body) for secret in active_secrets
        ),
    }
