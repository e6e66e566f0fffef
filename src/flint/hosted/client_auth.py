"""Client authentication at the token, revocation and introspection endpoints
(RFC 6749 §2.3): client_secret_basic, client_secret_post, or none (a client
naming itself with client_id alone; the core refuses that at the token endpoint
for every app issued a secret, which is every app)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from starlette.datastructures import FormData

from flint.hosted.oauth_errors import OAuthRequestError

BASIC_CHALLENGE = 'Basic realm="flint"'


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str = field(repr=False)
    method: str  # client_secret_basic, client_secret_post or none


def single_values(form: FormData) -> dict[str, str]:
    """The form's parameters, refusing any sent twice (RFC 6749 §3.1, §3.2)."""
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        if key in values:
            raise OAuthRequestError("invalid_request", f"Parameter sent more than once: {key}")
        if not isinstance(value, str):
            raise OAuthRequestError("invalid_request", f"Parameter is not text: {key}")
        values[key] = value
    return values


def _basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthRequestError(
            "invalid_client", "Only HTTP Basic client authentication is supported"
        )
    try:
        decoded = binascii.a2b_base64(encoded.strip().encode("ascii"), strict_mode=True).decode()
    except (binascii.Error, UnicodeError):
        raise OAuthRequestError("invalid_client", "Malformed HTTP Basic credentials") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise OAuthRequestError("invalid_client", "Malformed HTTP Basic credentials")
    # RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def client_credentials(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    form_id, form_secret = form.get("client_id", ""), form.get("client_secret", "")
    if authorization:
        if form_secret:
            raise OAuthRequestError(
                "invalid_request", "Use one client authentication method, not Basic and the body"
            )
        client_id, secret = _basic(authorization)
        if form_id and form_id != client_id:
            raise OAuthRequestError(
                "invalid_request", "client_id in the body differs from the Basic credentials"
            )
        return ClientCredentials(client_id, secret, "client_secret_basic")
    if not form_id:
        raise OAuthRequestError("invalid_client", "Client authentication is required")
    if form_secret:
        return ClientCredentials(form_id, form_secret, "client_secret_post")
    return ClientCredentials(form_id, "", "none")
