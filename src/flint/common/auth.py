"""Who is calling: credentials in, a Principal out. The gRPC interceptor is the only
caller; handlers read the resulting Principal and never parse credentials."""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.common import credentials
from flint.common.credentials import ApiKeyRecord
from flint.common.errors import Code, FlintError


class PrincipalKind(enum.Enum):
    ADMIN = "admin"
    MERCHANT = "merchant"
    PARTNER = "partner"
    APP = "app"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    # Admin key id, merchant id, partner id, or install id, by kind.
    id: str
    # "test" or "live" for merchant keys and app tokens; "" otherwise.
    environment: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    credential_id: str = ""


def _unauthenticated(reason: str, message: str) -> FlintError:
    return FlintError(Code.UNAUTHENTICATED, reason, message)


_KEY_PREFIXES: tuple[tuple[str, PrincipalKind, str], ...] = (
    (credentials.ADMIN_PREFIX, PrincipalKind.ADMIN, ""),
    (credentials.PARTNER_PREFIX, PrincipalKind.PARTNER, ""),
    (credentials.MERCHANT_PREFIXES["test"], PrincipalKind.MERCHANT, "test"),
    (credentials.MERCHANT_PREFIXES["live"], PrincipalKind.MERCHANT, "live"),
)


def bearer_credential(authorization: str | None) -> str:
    """The credential of an `Authorization: Bearer …` value."""
    if not authorization:
        raise _unauthenticated(
            "CREDENTIAL_MISSING", "Send a credential as `Authorization: Bearer <key or token>`"
        )
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _unauthenticated(
            "CREDENTIAL_MALFORMED", "The authorization header must be `Bearer <key or token>`"
        )
    return value.strip()


def authenticate(session: Session, authorization: str | None, now: datetime) -> Principal:
    credential = bearer_credential(authorization)
    for prefix, kind, environment in _KEY_PREFIXES:
        if credential.startswith(prefix):
            if not credentials.looks_like_secret(credential, prefix):
                break
            return _authenticate_key(session, credential, kind, environment, now)
    raise _unauthenticated("CREDENTIAL_MALFORMED", "The credential is not a Flint key or token")


def _authenticate_key(
    session: Session, secret: str, kind: PrincipalKind, environment: str, now: datetime
) -> Principal:
    record = session.scalar(
        select(ApiKeyRecord).where(ApiKeyRecord.secret_hash == credentials.hash_secret(secret))
    )
    if record is None or record.kind != kind.value or record.environment != environment:
        raise _unauthenticated("CREDENTIAL_INVALID", "The credential is not valid")
    if not record.is_active(now):
        raise _unauthenticated("CREDENTIAL_REVOKED", "The credential was revoked or rotated")
    return Principal(
        kind=kind,
        id=record.owner_id or record.id,
        environment=environment,
        credential_id=record.id,
    )


def authorize(principal: Principal, allowed: Collection[PrincipalKind], scope: str) -> None:
    """Refuses a principal of the wrong kind, or an app token without the scope."""
    if principal.kind not in allowed:
        accepted = ", ".join(sorted(kind.value for kind in allowed)) or "nobody"
        raise FlintError(
            Code.PERMISSION_DENIED,
            "PRINCIPAL_NOT_ALLOWED",
            f"A {principal.kind.value} credential cannot call this method (accepted: {accepted})",
            metadata={"principal": principal.kind.value, "accepted": accepted},
        )
    if principal.kind is PrincipalKind.APP and scope and scope not in principal.scopes:
        raise FlintError(
            Code.PERMISSION_DENIED,
            "SCOPE_MISSING",
            f"The install has not granted the scope {scope!r}",
            metadata={"scope": scope},
        )
