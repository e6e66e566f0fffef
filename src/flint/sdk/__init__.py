"""Flint's Python SDK: the REST API (through Envoy) with the generated protobuf
messages as its model, OAuth for apps, event streams and webhook verification.

    from flint.sdk import FlintClient

    with FlintClient(api_key="sk_test_…") as flint:
        order = flint.orders.create(
            {"currency": "usd", "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": 1250}]}
        )
        for o in flint.orders.list(status="ORDER_STATUS_OPEN"):
            print(o.id, o.total)

It depends on httpx, protobuf and googleapis-common-protos only; importing it
loads no server code.
"""

from flint.sdk._transport import RetryPolicy
from flint.sdk.client import FlintClient
from flint.sdk.errors import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    FieldViolation,
    FlintError,
    InvalidRequestError,
    NotFoundError,
    OAuthError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    WebhookVerificationError,
)
from flint.sdk.event_stream import EventStream
from flint.sdk.oauth import (
    AuthorizationRequest,
    OAuthClient,
    OAuthSession,
    Tokens,
    authorization_url,
    pkce_pair,
)
from flint.sdk.webhook_verification import verify_webhook

__all__ = [
    "APIConnectionError",
    "AuthenticationError",
    "AuthorizationRequest",
    "ConflictError",
    "EventStream",
    "FieldViolation",
    "FlintClient",
    "FlintError",
    "InvalidRequestError",
    "NotFoundError",
    "OAuthClient",
    "OAuthError",
    "OAuthSession",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "Tokens",
    "WebhookVerificationError",
    "authorization_url",
    "pkce_pair",
    "verify_webhook",
]
