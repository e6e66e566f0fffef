"""The OAuth 2.0 authorization server (RFC 6749 code flow, RFC 7636 PKCE,
RFC 7009 revocation, RFC 7662 introspection). The hosted web app speaks HTTP;
this module decides.

Errors carry `oauth_error` (the RFC error code) in their metadata, and for the
authorize step `redirect` ("true"/"false"): an unknown client or a redirect URI
that is not registered must never be redirected to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flint.accounts.models import MerchantRecord, PartnerRecord
from flint.apps.models import AppRecord
from flint.common import credentials, scopes
from flint.common.auth import Principal
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError
from flint.common.ids import new_id
from flint.installs import signing, tokens
from flint.installs.models import (
    AuthCodeRecord,
    GrantRecord,
    InstallRecord,
    RefreshTokenRecord,
    TokenFamilyRecord,
)
from flint.installs.service import (
    ENVIRONMENTS,
    load_view,
    record_install_event,
)

CODE_PREFIX = "fac_"
REFRESH_PREFIX = "frt_"
CODE_TTL = timedelta(minutes=5)
REFRESH_TTL = timedelta(days=30)
MAX_STATE_LENGTH = 1024
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def oauth_error(
    error: str, description: str, *, redirect: bool = True, code: Code = Code.INVALID_ARGUMENT
) -> FlintError:
    return FlintError(
        code,
        f"OAUTH_{error.upper()}",
        description,
        metadata={"oauth_error": error, "redirect": "true" if redirect else "false"},
    )


@dataclass(frozen=True)
class AuthorizeParams:
    response_type: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str
    code_challenge_method: str
    environment: str


@dataclass(frozen=True)
class ScopeLine:
    name: str
    description: str
    granted: bool


@dataclass(frozen=True)
class Prompt:
    app: AppRecord
    partner_name: str
    scopes: list[ScopeLine]
    environment: str
    # "new", "upgrade", "none", or "" without a merchant.
    change: str
    existing_environments: list[str]
    merchant_name: str


def _validated(session: Session, params: AuthorizeParams) -> tuple[AppRecord, list[str], str]:
    """The app, requested scopes and environment of a valid request."""
    if not params.client_id:
        raise oauth_error("invalid_request", "client_id is required", redirect=False)
    app = session.scalar(select(AppRecord).where(AppRecord.client_id == params.client_id))
    if app is None or app.status == "deleted":
        raise oauth_error("invalid_client", "Unknown client_id", redirect=False)
    # Exact string match only: no normalisation of case, path or trailing slash.
    if not params.redirect_uri or params.redirect_uri not in app.redirect_uris:
        raise oauth_error(
            "invalid_request",
            "redirect_uri is missing or is not registered for this app",
            redirect=False,
        )
    if len(params.state) > MAX_STATE_LENGTH:
        raise oauth_error("invalid_request", "state is too long")
    if params.response_type != "code":
        raise oauth_error("unsupported_response_type", "Only response_type=code is supported")
    if app.status != "active":
        raise oauth_error("unauthorized_client", "This app is not accepting installs")
    environment = params.environment or "test"
    if environment not in ENVIRONMENTS:
        raise oauth_error("invalid_request", "environment must be test or live")
    requested = list(dict.fromkeys(params.scope.split()))
    if not requested:
        raise oauth_error("invalid_scope", "scope is required")
    for scope in requested:
        if scope not in scopes.NAMES:
            raise oauth_error("invalid_scope", f"Unknown scope {scope!r}")
        if scope not in app.requested_scopes:
            raise oauth_error("invalid_scope", f"The app did not register the scope {scope!r}")
    if params.code_challenge or params.code_challenge_method:
        if params.code_challenge_method != "S256":
            raise oauth_error("invalid_request", "code_challenge_method must be S256")
        if not _CHALLENGE.match(params.code_challenge):
            raise oauth_error("invalid_request", "code_challenge is not a S256 challenge")
    return app, requested, environment


def _active_install(
    session: Session, app_id: str, merchant_id: str, *, lock: bool = False
) -> InstallRecord | None:
    query = select(InstallRecord).where(
        InstallRecord.app_id == app_id,
        InstallRecord.merchant_id == merchant_id,
        InstallRecord.status == "active",
    )
    return session.scalar(query.with_for_update() if lock else query)


def start_authorization(
    session: Session, principal: Principal | None, params: AuthorizeParams
) -> Prompt:
    app, requested, environment = _validated(session, params)
    partner_name = session.scalar(
        select(PartnerRecord.name).where(PartnerRecord.id == app.partner_id)
    )
    granted: set[str] = set()
    change, existing, merchant_name = "", [], ""
    if principal is not None:
        merchant_name = (
            session.scalar(
                select(MerchantRecord.name).where(MerchantRecord.id == principal.merchant)
            )
            or ""
        )
        install = _active_install(session, app.id, principal.merchant)
        if install is None:
            change = "new"
        else:
            view = load_view(session, install)
            existing = [g.environment for g in view.grants if g.status == "active"]
            grant = view.grant(environment)
            if grant is not None and grant.status == "active":
                granted = set(grant.scopes)
            change = "none" if set(requested) <= granted else "upgrade"
    catalog = {s.name: s.description for s in scopes.CATALOG}
    return Prompt(
        app=app,
        partner_name=partner_name or "",
        scopes=[ScopeLine(s, catalog[s], s in granted) for s in requested],
        environment=environment,
        change=change,
        existing_environments=existing,
        merchant_name=merchant_name,
    )


@dataclass(frozen=True)
class IssuedCode:
    code: str
    install_id: str


def approve_authorization(
    uow: UnitOfWork, principal: Principal, params: AuthorizeParams
) -> IssuedCode:
    """The merchant approved: install (or widen the install) and issue a code."""
    app, requested, environment = _validated(uow.session, params)
    # The app's row, locked (and read again): a concurrent DeleteApp waits and
    # then sees this install, or this approval sees the app deleted.
    uow.session.refresh(app, with_for_update=True)
    if app.status != "active":
        raise oauth_error("unauthorized_client", "This app is not accepting installs")
    merchant_id = principal.merchant
    # Locked: a second approval (a double click) waits and then sees this one's
    # grant, instead of adding the same grant again or losing a version.
    install = _active_install(uow.session, app.id, merchant_id, lock=True)
    created = install is None
    if install is None:
        install = InstallRecord(
            id=new_id("ins"),
            merchant_id=merchant_id,
            app_id=app.id,
            status="active",
            version=0,
            created_at=uow.now,
            updated_at=uow.now,
            uninstalled_at=None,
        )
        uow.session.add(install)
        try:
            uow.session.flush()
        except IntegrityError:
            raise FlintError(
                Code.ABORTED, "CONCURRENT_INSTALL", "The app is being installed; try again"
            ) from None
    view = load_view(uow.session, install)
    grant = view.grant(environment)
    changed = created
    if grant is None:
        grant = GrantRecord(
            install_id=install.id,
            environment=environment,
            merchant_id=merchant_id,
            scopes=requested,
            status="active",
            granted_at=uow.now,
            revoked_at=None,
        )
        uow.session.add(grant)
        view.grants.append(grant)
        changed = True
    elif grant.status != "active":
        grant.status, grant.scopes = "active", requested
        grant.granted_at, grant.revoked_at = uow.now, None
        changed = True
    elif not set(requested) <= set(grant.scopes):
        grant.scopes = [*grant.scopes, *(s for s in requested if s not in grant.scopes)]
        changed = True
    if changed:
        install.version += 1
        install.updated_at = uow.now
        record_install_event(
            uow, view, "install.created" if created else "install.updated", environment
        )
    code = credentials.generate_secret(CODE_PREFIX)
    uow.session.add(
        AuthCodeRecord(
            code_hash=credentials.hash_secret(code),
            client_id=app.client_id,
            install_id=install.id,
            merchant_id=merchant_id,
            environment=environment,
            redirect_uri=params.redirect_uri,
            scopes=requested,
            code_challenge=params.code_challenge,
            created_at=uow.now,
            expires_at=uow.now + CODE_TTL,
            used_at=None,
            family_id=None,
        )
    )
    return IssuedCode(code, install.id)


# --- the token endpoint -------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    grant_type: str
    code: str
    redirect_uri: str
    code_verifier: str
    refresh_token: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class Tokens:
    access_token: str
    expires_in: int
    refresh_token: str
    scopes: list[str]
    install_id: str
    merchant_id: str
    environment: str


def authenticate_client(session: Session, client_id: str, client_secret: str) -> AppRecord:
    """The app of a client; a wrong secret is invalid_client. No secret at all is
    a public client, which must prove possession with PKCE instead."""
    app = session.scalar(select(AppRecord).where(AppRecord.client_id == client_id))
    if (
        app is None
        or app.status == "deleted"
        or (client_secret and not credentials.secret_matches(client_secret, app.client_secret_hash))
    ):
        raise oauth_error(
            "invalid_client", "Client authentication failed", code=Code.UNAUTHENTICATED
        )
    return app


def _invalid_grant(description: str, *, keep_revocation: bool = False) -> FlintError:
    error = oauth_error("invalid_grant", description)
    # A refusal that revoked tokens must keep the revocation.
    error.commit = keep_revocation
    return error


def exchange_token(uow: UnitOfWork, request: TokenRequest, *, issuer: str) -> Tokens:
    if request.grant_type not in ("authorization_code", "refresh_token"):
        raise oauth_error(
            "unsupported_grant_type", "grant_type must be authorization_code or refresh_token"
        )
    if request.grant_type == "authorization_code":
        family = _exchange_code(uow, request)
    else:
        app = _authenticate_at_token_endpoint(uow.session, request)
        family = _redeem_refresh_token(uow, app, request)
    return _issue_tokens(uow, family, issuer=issuer)


def _authenticate_at_token_endpoint(session: Session, request: TokenRequest) -> AppRecord:
    """The client's app. A client issued a secret (every registered app) is
    confidential and authenticates with it, PKCE or not (RFC 6749 §3.2.1; RFC 9700
    §2.1.1: PKCE proves who started the flow, not who the client is). Only a
    client without a secret may name itself with its client_id alone."""
    if not request.client_id:
        raise oauth_error(
            "invalid_client", "Client authentication is required", code=Code.UNAUTHENTICATED
        )
    app = authenticate_client(session, request.client_id, request.client_secret)
    if app.client_secret_hash and not request.client_secret:
        raise oauth_error(
            "invalid_client",
            "This client was issued a client secret: authenticate with it"
            " (HTTP Basic or client_secret_post), with or without PKCE",
            code=Code.UNAUTHENTICATED,
        )
    return app


def _exchange_code(uow: UnitOfWork, request: TokenRequest) -> TokenFamilyRecord:
    """Redeems a code. A code is worth one attempt: any refusal (wrong client,
    failed client authentication, wrong redirect_uri, wrong or missing
    code_verifier) burns it, so whoever holds a leaked code cannot keep trying,
    and the rightful client's later attempt fails too (RFC 6749 §4.1.2, RFC 9700
    §4.5); the burn is committed with the refusal."""
    if not request.code:
        raise oauth_error("invalid_request", "code is required")
    try:
        app = _authenticate_at_token_endpoint(uow.session, request)
        return _redeem_code(uow, app, request)
    except FlintError as error:
        if _burn_code(uow, credentials.hash_secret(request.code)):
            error.commit = True
        raise


def _burn_code(uow: UnitOfWork, code_hash: str) -> bool:
    """Marks the code used unless it was; whether there is such a code."""
    uow.session.execute(
        update(AuthCodeRecord)
        .where(AuthCodeRecord.code_hash == code_hash, AuthCodeRecord.used_at.is_(None))
        .values(used_at=uow.now)
    )
    return uow.session.get(AuthCodeRecord, code_hash) is not None


def _pkce_matches(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(computed, challenge)


def _revoke_family(uow: UnitOfWork, family_id: str | None, reason: str) -> None:
    if family_id is None:
        return
    uow.session.execute(
        update(TokenFamilyRecord)
        .where(TokenFamilyRecord.id == family_id, TokenFamilyRecord.revoked_at.is_(None))
        .values(revoked_at=uow.now, revoke_reason=reason)
    )
    uow.after_commit(tokens.forget_cached_state)


def _redeem_code(uow: UnitOfWork, app: AppRecord, request: TokenRequest) -> TokenFamilyRecord:
    code_hash = credentials.hash_secret(request.code)
    code = uow.session.get(AuthCodeRecord, code_hash, with_for_update=True)
    if code is None:
        raise _invalid_grant("The code is not valid")
    if code.used_at is not None:
        # A replayed code may have been stolen: revoke what it was exchanged for.
        _revoke_family(uow, code.family_id, "code_replayed")
        raise _invalid_grant("The code was already used", keep_revocation=True)
    if code.expires_at <= uow.now:
        raise _invalid_grant("The code has expired")
    if code.client_id != app.client_id:
        raise _invalid_grant("The code was issued to another client")
    if request.redirect_uri != code.redirect_uri:
        raise _invalid_grant("redirect_uri does not match the authorization request")
    if code.code_challenge:
        if not _VERIFIER.match(request.code_verifier):
            raise _invalid_grant("code_verifier is missing or malformed")
        if not _pkce_matches(request.code_verifier, code.code_challenge):
            raise _invalid_grant("code_verifier does not match the code_challenge")
    elif request.code_verifier:
        raise _invalid_grant("code_verifier sent for a code issued without code_challenge")
    elif not request.client_secret:
        raise oauth_error(
            "invalid_client",
            "A client without a secret must use PKCE",
            code=Code.UNAUTHENTICATED,
        )
    # Single use even under concurrent redemption: only one UPDATE matches.
    claimed = uow.session.execute(
        update(AuthCodeRecord)
        .where(AuthCodeRecord.code_hash == code_hash, AuthCodeRecord.used_at.is_(None))
        .values(used_at=uow.now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise _invalid_grant("The code was already used")
    _require_active_grant(uow.session, code.install_id, code.environment)
    family = TokenFamilyRecord(
        id=new_id("key"),
        client_id=app.client_id,
        install_id=code.install_id,
        merchant_id=code.merchant_id,
        environment=code.environment,
        scopes=code.scopes,
        created_at=uow.now,
        revoked_at=None,
        revoke_reason="",
        # authenticate_client already refused a wrong secret.
        client_authenticated=bool(request.client_secret),
    )
    uow.session.add(family)
    code.family_id = family.id
    return family


def _require_active_grant(session: Session, install_id: str, environment: str) -> None:
    grant = session.get(GrantRecord, (install_id, environment))
    install = session.get(InstallRecord, install_id)
    if grant is None or install is None or grant.status != "active" or install.status != "active":
        raise _invalid_grant("The install or its grant is no longer active")


def _redeem_refresh_token(
    uow: UnitOfWork, app: AppRecord, request: TokenRequest
) -> TokenFamilyRecord:
    if not request.refresh_token:
        raise oauth_error("invalid_request", "refresh_token is required")
    token_hash = credentials.hash_secret(request.refresh_token)
    token = uow.session.get(RefreshTokenRecord, token_hash, with_for_update=True)
    if token is None:
        raise _invalid_grant("The refresh token is not valid")
    family = uow.session.get(TokenFamilyRecord, token.family_id)
    if family is None:
        raise _invalid_grant("The refresh token is not valid")
    if family.client_id != app.client_id:
        # Presented by a client it was not issued to: treat it as stolen.
        _revoke_family(uow, family.id, "refresh_token_misused")
        raise _invalid_grant("The refresh token was issued to another client", keep_revocation=True)
    if family.client_authenticated and not request.client_secret:
        # RFC 6749 §6: a client issued credentials authenticates to refresh. Checked
        # before replay detection, so an unauthenticated request changes nothing.
        raise oauth_error(
            "invalid_client",
            "The refresh token was issued to a client that authenticated with its client"
            " secret: send the client secret to refresh it",
            code=Code.UNAUTHENTICATED,
        )
    if family.revoked_at is not None:
        raise _invalid_grant("The refresh token was revoked")
    if token.used_at is not None:
        # Rotation means an old token is never presented twice by its owner.
        _revoke_family(uow, family.id, "refresh_token_replayed")
        raise _invalid_grant("The refresh token was already used", keep_revocation=True)
    if token.expires_at <= uow.now:
        raise _invalid_grant("The refresh token has expired")
    claimed = uow.session.execute(
        update(RefreshTokenRecord)
        .where(RefreshTokenRecord.token_hash == token_hash, RefreshTokenRecord.used_at.is_(None))
        .values(used_at=uow.now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        _revoke_family(uow, family.id, "refresh_token_replayed")
        raise _invalid_grant("The refresh token was already used", keep_revocation=True)
    _require_active_grant(uow.session, family.install_id, family.environment)
    return family


def _issue_tokens(uow: UnitOfWork, family: TokenFamilyRecord, *, issuer: str) -> Tokens:
    app_id = uow.session.scalar(
        select(InstallRecord.app_id).where(InstallRecord.id == family.install_id)
    )
    access_token, expires_in = signing.issue_access_token(
        uow.session,
        now=uow.now,
        issuer=issuer,
        claims={
            "sub": family.install_id,
            "fid": family.id,
            "client_id": family.client_id,
            "scope": " ".join(family.scopes),
            "mer": family.merchant_id,
            "env": family.environment,
            "app": app_id,
        },
    )
    refresh_token = credentials.generate_secret(REFRESH_PREFIX)
    uow.session.add(
        RefreshTokenRecord(
            token_hash=credentials.hash_secret(refresh_token),
            family_id=family.id,
            created_at=uow.now,
            expires_at=uow.now + REFRESH_TTL,
            used_at=None,
        )
    )
    return Tokens(
        access_token=access_token,
        expires_in=expires_in,
        refresh_token=refresh_token,
        scopes=list(family.scopes),
        install_id=family.install_id,
        merchant_id=family.merchant_id,
        environment=family.environment,
    )


# --- revocation and introspection ------------------------------------------------------


def _family_of(
    session: Session, token: str, *, now: datetime, issuer: str
) -> TokenFamilyRecord | None:
    """The family of an access token (even an expired one) or a refresh token."""
    if token.startswith(REFRESH_PREFIX):
        record = session.get(RefreshTokenRecord, credentials.hash_secret(token))
        return None if record is None else session.get(TokenFamilyRecord, record.family_id)
    try:
        claims = signing.decode_access_token(
            session, token, now=now, issuer=issuer, verify_exp=False
        )
    except signing.InvalidTokenError:
        return None
    return session.get(TokenFamilyRecord, str(claims["fid"]))


def revoke_token(
    uow: UnitOfWork, *, token: str, client_id: str, client_secret: str, issuer: str
) -> None:
    """RFC 7009: revokes the token's family. Unknown tokens, tokens of other
    clients, and tokens issued to this client authenticated with its secret when
    the request has none, are ignored (the answer is the same, so nothing leaks)."""
    app = authenticate_client(uow.session, client_id, client_secret)
    family = _family_of(uow.session, token, now=uow.now, issuer=issuer)
    if family is None or family.client_id != app.client_id:
        return
    if family.client_authenticated and not client_secret:
        return
    _revoke_family(uow, family.id, "revoked_by_client")


@dataclass(frozen=True)
class Introspection:
    active: bool
    claims: dict[str, object]


def introspect_token(
    session: Session, *, token: str, client_id: str, client_secret: str, now: datetime, issuer: str
) -> Introspection:
    app = authenticate_client(session, client_id, client_secret)
    inactive = Introspection(False, {})
    if token.startswith(REFRESH_PREFIX):
        record = session.get(RefreshTokenRecord, credentials.hash_secret(token))
        if record is None or record.used_at is not None or record.expires_at <= now:
            return inactive
        family = session.get(TokenFamilyRecord, record.family_id)
        # RFC 7662's token_type is the RFC 6749 type ("Bearer"); refresh tokens have none.
        claims: dict[str, object] = {
            "exp": int(record.expires_at.timestamp()),
            "iat": int(record.created_at.timestamp()),
        }
    else:
        try:
            decoded = signing.decode_access_token(session, token, now=now, issuer=issuer)
        except signing.InvalidTokenError:
            return inactive
        family = session.get(TokenFamilyRecord, str(decoded["fid"]))
        claims = {
            "token_type": "Bearer",
            "exp": decoded["exp"],
            "iat": decoded["iat"],
            "aud": decoded["aud"],
            "iss": decoded["iss"],
        }
    if family is None or family.client_id != app.client_id:
        return inactive
    state = tokens.family_state(session, family.id)
    if state is None or not state.active:
        return inactive
    return Introspection(
        True,
        {
            **claims,
            "scope": " ".join(family.scopes),
            "client_id": family.client_id,
            "sub": family.install_id,
            "install_id": family.install_id,
            "merchant_id": family.merchant_id,
            "environment": family.environment,
        },
    )
