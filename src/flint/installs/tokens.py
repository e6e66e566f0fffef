"""Checking an app's access token: a valid signature is not enough — the token's
family, the install and the environment's grant must still be active. The state
is cached for at most STATE_TTL_SECONDS, so revocation wins within that time.

The signature check (RS256) is the costliest step of authenticating a call, and
apps send the same token for an hour: a token whose signature and claims were
verified is trusted again for VERIFIED_TTL_SECONDS, never past its expiry. The
family state above is still checked on every call."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.apps.models import AppRecord
from flint.installs.models import GrantRecord, InstallRecord, TokenFamilyRecord

STATE_TTL_SECONDS = 0.5
# As long as the key ring keeps a key without looking at the database again.
VERIFIED_TTL_SECONDS = 60.0
_MAX_CACHED = 100_000


@dataclass(frozen=True)
class TokenState:
    active: bool
    install_id: str
    merchant_id: str
    environment: str
    app_id: str
    # The app's name, for the records of what it did (at most STATE_TTL_SECONDS old).
    app_name: str
    client_id: str
    # Scopes the token may use now: the family's, within the current grant.
    scopes: frozenset[str]


_cache: dict[str, tuple[float, TokenState | None]] = {}
_lock = threading.Lock()


def forget_cached_state() -> None:
    with _lock:
        _cache.clear()


def family_state(session: Session, family_id: str) -> TokenState | None:
    """None when the family does not exist."""
    now = time.monotonic()
    with _lock:
        cached = _cache.get(family_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    row = session.execute(
        select(TokenFamilyRecord, GrantRecord, InstallRecord, AppRecord.name)
        .join(InstallRecord, InstallRecord.id == TokenFamilyRecord.install_id)
        .join(AppRecord, AppRecord.id == InstallRecord.app_id)
        .join(
            GrantRecord,
            (GrantRecord.install_id == TokenFamilyRecord.install_id)
            & (GrantRecord.environment == TokenFamilyRecord.environment),
        )
        .where(TokenFamilyRecord.id == family_id)
    ).one_or_none()
    state: TokenState | None = None
    if row is not None:
        family, grant, install, app_name = row
        state = TokenState(
            active=family.revoked_at is None
            and grant.status == "active"
            and install.status == "active",
            install_id=install.id,
            merchant_id=install.merchant_id,
            environment=grant.environment,
            app_id=install.app_id,
            app_name=app_name,
            client_id=family.client_id,
            scopes=frozenset(family.scopes) & frozenset(grant.scopes),
        )
    with _lock:
        if len(_cache) > _MAX_CACHED:
            _cache.clear()
        _cache[family_id] = (now + STATE_TTL_SECONDS, state)
    return state


def is_expired(exp: int, now: datetime) -> bool:
    return exp <= int(now.timestamp())


Claims = dict[str, Any]
# (database, issuer, token digest) → (trusted until (monotonic), claims)
_verified: dict[tuple[object, str, bytes], tuple[float, Claims]] = {}


def verified_claims(
    token: str,
    *,
    database: object,
    issuer: str,
    now: datetime,
    leeway_seconds: int,
    verify: Callable[[], Claims],
) -> Claims:
    """The claims of `token`, from `verify()` (which checks the signature and
    raises if the token is not valid) or from an earlier call's verification.
    A cached token past `exp` (plus the leeway verification allows) is verified
    again, so expiry reads exactly as without the cache."""
    key = (database, issuer, hashlib.sha256(token.encode()).digest())
    clock = time.monotonic()
    with _lock:
        cached = _verified.get(key)
    if (
        cached is not None
        and cached[0] > clock
        and int(now.timestamp()) < int(cached[1]["exp"]) + leeway_seconds
    ):
        return cached[1]
    claims = verify()
    with _lock:
        if len(_verified) > _MAX_CACHED:
            _verified.clear()
        _verified[key] = (clock + VERIFIED_TTL_SECONDS, claims)
    return claims
