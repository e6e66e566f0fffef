"""Verifying Flint's webhook deliveries (Standard Webhooks) and reading them as
typed `flint.events.v1.Event` messages.

A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
`webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` signatures of
`"{id}.{timestamp}.{body}"` under the endpoint's secret (`whsec_<base64>`).
During a secret rotation both secrets sign; pass every secret you accept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from google.protobuf import json_format

from flint.events.v1.events_service_pb2 import Event
from flint.sdk.errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
DEFAULT_TOLERANCE = 300


def _secret_bytes(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from error
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, payload: bytes) -> str:
    """The `v1,<base64>` signature of one delivery (what Flint sends)."""
    signed = f"{message_id}.{timestamp}.".encode() + payload
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_webhook(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> Event:
    """Checks a delivery's signature and timestamp and returns its event.

    Args:
        payload: the request body exactly as received (bytes, before any JSON parsing).
        headers: the request headers (any case).
        secret: the endpoint secret, or several (old and new, while rotating).
        tolerance: seconds the timestamp may be off, in either direction.
        now: the current Unix time (for tests).

    Raises:
        WebhookVerificationError: a header is missing or malformed, the timestamp
            is outside the tolerance, no signature matches, or the body is not an event.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    message_id = lowered.get("webhook-id", "")
    timestamp_text = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (message_id and timestamp_text and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("webhook-timestamp is in the future")

    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("no webhook secret given")
    expected = [
        base64.b64decode(sign(s, message_id, timestamp, payload).removeprefix("v1,"))
        for s in secrets
    ]
    matched = False
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Compare against every secret, without stopping early.
        for digest in expected:
            matched |= hmac.compare_digest(digest, given)
    if not matched:
        raise WebhookVerificationError("no signature matches")

    event = Event()
    try:
        json_format.Parse(payload, event, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError) as error:
        raise WebhookVerificationError(f"the payload is not an event: {error}") from None
    return event
