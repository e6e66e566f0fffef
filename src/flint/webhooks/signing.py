"""Signing secrets and Standard Webhooks signatures.

A secret is `whsec_` + base64 of 32 random bytes. It is shown once and stored
sealed with the key-encryption key (`flint.common.envelope`), bound to its
endpoint and version, since signing needs the secret itself: a hash would not
do. The signature of a delivery is
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

from flint.common import envelope

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def aad(endpoint_id: str, version: int) -> str:
    """What a sealed secret is bound to: a value copied to another endpoint's row
    does not open."""
    return f"webhook_secret:{endpoint_id}:{version}"


def encrypt(secret: str, endpoint_id: str, version: int) -> str:
    return envelope.seal(secret.encode(), aad(endpoint_id, version))


@lru_cache(maxsize=4096)
def decrypt(ciphertext: str, endpoint_id: str, version: int) -> str:
    # Every delivery signs with its endpoint's secrets: opening them once per
    # stored value (a rotation or a KEK re-wrap stores a new one) keeps AES-GCM
    # and the KEK look-up off the hot path.
    return envelope.open_sealed(ciphertext, aad(endpoint_id, version)).decode()


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
