"""Exceptions raised by the SDK.

Every API error is a `google.rpc.Status` that Envoy renders as JSON::

    {"code": 3, "message": "…", "details": [
      {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "…", "metadata": {…}},
      {"@type": "type.googleapis.com/google.rpc.BadRequest", "field_violations": […]}]}

`error_from_response` turns it into the `FlintError` subclass for its HTTP status,
so callers catch by kind (`NotFoundError`) and branch on the stable `reason`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

# google.rpc.Code numbers → names (google/rpc/code.proto); kept here so the SDK
# does not need grpcio at runtime.
_CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


@dataclass(frozen=True)
class FieldViolation:
    """One offending field of a request (`google.rpc.BadRequest.FieldViolation`)."""

    field: str
    description: str
    reason: str = ""


class FlintError(Exception):
    """An error answered by Flint (or by the SDK on its behalf).

    Attributes:
        status: HTTP status code (0 when no response was received).
        code: canonical `google.rpc.Code` number (3 = INVALID_ARGUMENT, …).
        reason: stable UPPER_SNAKE_CASE reason from `ErrorInfo` (e.g.
            `AMOUNT_EXCEEDS_REFUNDABLE`); empty when the server gave none.
        message: human-readable message; never parse it, use `reason`.
        field_violations: every offending field, for invalid input.
        metadata: `ErrorInfo.metadata` (dynamic values such as the missing scope).
        request_id: the `x-request-id` of the call, to quote to support.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: int = 2,
        reason: str = "",
        field_violations: tuple[FieldViolation, ...] = (),
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.reason = reason
        self.field_violations = field_violations
        self.metadata: dict[str, str] = dict(metadata or {})
        self.request_id = request_id
        self.body = body

    @property
    def code_name(self) -> str:
        """The canonical code's name, e.g. `INVALID_ARGUMENT`."""
        return _CODE_NAMES.get(self.code, str(self.code))

    def __str__(self) -> str:
        parts = [f"{self.status} {self.code_name}"]
        if self.reason:
            parts.append(self.reason)
        text = " ".join(parts) + f": {self.message}"
        if self.request_id:
            text += f" (request {self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code_name}, "
            f"reason={self.reason!r}, message={self.message!r})"
        )


class InvalidRequestError(FlintError):
    """400: the request was refused as invalid; see `field_violations`."""


class AuthenticationError(FlintError):
    """401: the credential is missing, malformed, invalid, expired or revoked."""


class PermissionDeniedError(FlintError):
    """403: the credential may not do this (`SCOPE_MISSING`, `PRINCIPAL_NOT_ALLOWED`…).

    Named to avoid shadowing the built-in `PermissionError`."""


class NotFoundError(FlintError):
    """404: no such object — also for another tenant's objects."""


class ConflictError(FlintError):
    """409: already exists, or the idempotency key is in use by a request in flight."""


class RateLimitError(FlintError):
    """429: too many requests; retried automatically before it reaches you."""


class ServerError(FlintError):
    """5xx: Flint or Envoy failed; retried automatically when that is safe."""


class APIConnectionError(FlintError):
    """No response: the connection failed or timed out (after the retries)."""


class OAuthError(FlintError):
    """An RFC 6749 error from an OAuth endpoint; `reason` holds the `error` code
    (`invalid_grant`, `invalid_client`, …)."""


class WebhookVerificationError(Exception):
    """A webhook's signature, timestamp or payload did not verify."""


_BY_STATUS: dict[int, type[FlintError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


def error_class(status: int) -> type[FlintError]:
    """The exception class for an HTTP status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, FlintError)


def error_from_response(response: httpx.Response) -> FlintError:
    """Builds the exception for a non-2xx API response (google.rpc.Status JSON);
    a body of any other shape still gives an exception of the right class."""
    request_id = response.headers.get("x-request-id", "")
    cls = error_class(response.status_code)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        body = None
    if not isinstance(body, dict):
        text = response.text if response.is_stream_consumed or response.is_closed else ""
        return cls(
            text.strip() or response.reason_phrase or f"HTTP {response.status_code}",
            status=response.status_code,
            request_id=request_id,
        )
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    for detail in body.get("details") or []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo"):
            reason = reason or str(detail.get("reason", ""))
            metadata.update({str(k): str(v) for k, v in (detail.get("metadata") or {}).items()})
        elif kind.endswith("google.rpc.BadRequest"):
            for violation in detail.get("field_violations") or detail.get("fieldViolations") or []:
                violations.append(
                    FieldViolation(
                        field=str(violation.get("field", "")),
                        description=str(violation.get("description", "")),
                        reason=str(violation.get("reason", "")),
                    )
                )
    code = body.get("code", 2)
    return cls(
        str(body.get("message", "")),
        status=response.status_code,
        code=code if isinstance(code, int) else 2,
        reason=reason,
        field_violations=tuple(violations),
        metadata=metadata,
        request_id=request_id,
        body=body,
    )


def oauth_error_from_response(response: httpx.Response) -> OAuthError:
    """Builds the exception for an RFC 6749 error response of an OAuth endpoint."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        body = {}
    error = str(body.get("error", "")) or f"http_{response.status_code}"
    return OAuthError(
        str(body.get("error_description", "")) or error,
        status=response.status_code,
        code=16 if response.status_code == 401 else 3,
        reason=error,
        request_id=response.headers.get("x-request-id", ""),
        body=body,
    )
