"""Who is calling: credentials in, a Principal out. The RPC pipeline (server/rpc.py) is the only
caller; handlers read the resulting Principal and never parse credentials."""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.accounts.models import MerchantSessionRecord
from flint.common import credentials
from flint.common.credentials import ApiKeyRecord
from flint.common.errors import Code, FlintError
from flint.installs import signing, tokens


class PrincipalKind(enum.Enum):
    ADMIN = "admin"
    MERCHANT = "merchant"
    PARTNER = "partner"
    APP = "app"
    INTERNAL = "internal"
    MERCHANT_SESSION = "merchant_session"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    # Merchant id (merchant keys and sessions), partner id, install id (apps),
    # or the key id (admin, internal).
    id: str
    # "test" or "live" for merchant keys and app tokens; "" otherwise.
    environment: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    credential_id: str = ""
    # For app tokens: the merchant and app of the install, and the OAuth client.
    merchant_id: str = ""
    app_id: str = ""
    app_name: str = ""
    client_id: str = ""

    @property
    def merchant(self) -> str:
        """The merchant this principal acts for, or "" if none."""
        if self.kind in (PrincipalKind.MERCHANT, PrincipalKind.MERCHANT_SESSION):
            return self.id
        return self.merchant_id


def _unauthenticated(reason: str, message: str) -> FlintError:
    return FlintError(Code.UNAUTHENTICATED, reason, message)


_KEY_PREFIXES: tuple[tuple[str, PrincipalKind, str], ...] = (
    (credentials.ADMIN_PREFIX, PrincipalKind.ADMIN, ""),
    (credentials.PARTNER_PREFIX, PrincipalKind.PARTNER, ""),
    (credentials.INTERNAL_PREFIX, PrincipalKind.INTERNAL, ""),
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


def authenticate(
    session: Session, authorization: str | None, now: datetime, *, issuer: str
) -> Principal:
    credential = bearer_credential(authorization)
    if credential.startswith("eyJ") and credential.count(".") == 2:
        return _authenticate_app_token(session, credential, now, issuer)
    if credential.startswith(credentials.MERCHANT_SESSION_PREFIX):
        if credentials.looks_like_secret(credential, credentials.MERCHANT_SESSION_PREFIX):
            return _authenticate_merchant_session(session, credential, now)
        raise _unauthenticated("CREDENTIAL_MALFORMED", "The credential is not a Flint key or token")
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


def _authenticate_merchant_session(session: Session, token: str, now: datetime) -> Principal:
    record = session.scalar(
        select(MerchantSessionRecord).where(
            MerchantSessionRecord.token_hash == credentials.hash_secret(token)
        )
    )
    if record is None:
        raise _unauthenticated("CREDENTIAL_INVALID", "The session is not valid")
    if record.revoked_at is not None or record.expires_at <= now:
        raise _unauthenticated("CREDENTIAL_REVOKED", "The session has ended; sign in again")
    return Principal(
        kind=PrincipalKind.MERCHANT_SESSION, id=record.merchant_id, credential_id=record.id
    )


def _authenticate_app_token(session: Session, token: str, now: datetime, issuer: str) -> Principal:
    try:
        claims = tokens.verified_claims(
            token,
            database=session.get_bind().engine.url,
            issuer=issuer,
            now=now,
            leeway_seconds=signing.LEEWAY_SECONDS,
            verify=lambda: signing.decode_access_token(session, token, now=now, issuer=issuer),
        )
    except signing.InvalidTokenError as error:
        reason = "CREDENTIAL_EXPIRED" if str(error) == "token expired" else "CREDENTIAL_INVALID"
        raise _unauthenticated(reason, f"The access token is not valid: {error}") from None
    state = tokens.family_state(session, str(claims["fid"]))
    if state is None or state.install_id != claims["sub"]:
        raise _unauthenticated("CREDENTIAL_INVALID", "The access token is not valid")
    if not state.active:
        raise _unauthenticated(
            "CREDENTIAL_REVOKED", "The install was uninstalled or its grant was revoked"
        )
    token_scopes = frozenset(str(claims.get("scope", "")).split())
    return Principal(
        kind=PrincipalKind.APP,
        id=state.install_id,
        environment=state.environment,
        scopes=token_scopes & state.scopes,
        credential_id=str(claims["fid"]),
        merchant_id=state.merchant_id,
        app_id=state.app_id,
        app_name=state.app_name,
        client_id=state.client_id,
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


def refuse_other_environment(own: str, wanted: str, doing: str) -> None:
    """A test credential must not act on live objects, nor a live one on test."""
    if wanted != own:
        raise FlintError(
            Code.PERMISSION_DENIED,
            "ENVIRONMENT_MISMATCH",
            f"A {own} credential cannot {doing}",
            metadata={"environment": wanted},
        ).with_violation("environment", f"must be {own} with this credential")
