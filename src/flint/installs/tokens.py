"""Checking an app's access token: a valid signature is not enough — the token's
family, the install and the environment's grant must still be active. The state
is cached for at most STATE_TTL_SECONDS, so revocation wins within that time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.installs.models import GrantRecord, InstallRecord, TokenFamilyRecord

STATE_TTL_SECONDS = 0.5


@dataclass(frozen=True)
class TokenState:
    active: bool
    install_id: str
    merchant_id: str
    environment: str
    app_id: str
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
        select(TokenFamilyRecord, GrantRecord, InstallRecord)
        .join(InstallRecord, InstallRecord.id == TokenFamilyRecord.install_id)
        .join(
            GrantRecord,
            (GrantRecord.install_id == TokenFamilyRecord.install_id)
            & (GrantRecord.environment == TokenFamilyRecord.environment),
        )
        .where(TokenFamilyRecord.id == family_id)
    ).one_or_none()
    state: TokenState | None = None
    if row is not None:
        family, grant, install = row
        state = TokenState(
            active=family.revoked_at is None
            and grant.status == "active"
            and install.status == "active",
            install_id=install.id,
            merchant_id=install.merchant_id,
            environment=grant.environment,
            app_id=install.app_id,
            client_id=family.client_id,
            scopes=frozenset(family.scopes) & frozenset(grant.scopes),
        )
    with _lock:
        if len(_cache) > 100_000:
            _cache.clear()
        _cache[family_id] = (now + STATE_TTL_SECONDS, state)
    return state


def is_expired(exp: int, now: datetime) -> bool:
    return exp <= int(now.timestamp())
