"""Server-side keys the platform itself needs (page-token encryption, stored
idempotent responses), kept in the database so every server process shares
them. `flint migrate` creates them; readers only read."""

from __future__ import annotations

import base64
import secrets
import threading
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flint.common.db import Base

PAGE_TOKEN_KEY = "page_tokens"  # noqa: S105 - a key name
IDEMPOTENCY_KEY = "idempotency"
# Encrypts webhook signing secrets, which must stay usable to sign.
WEBHOOK_SECRETS_KEY = "webhook_secrets"
KEY_NAMES = (PAGE_TOKEN_KEY, IDEMPOTENCY_KEY, WEBHOOK_SECRETS_KEY)


class PlatformKey(Base):
    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


_cache: dict[tuple[str, str], bytes] = {}
_lock = threading.Lock()


def ensure_platform_keys(session: Session, now: datetime) -> None:
    """Creates any missing key. Run inside a writer transaction (SQLite: BEGIN
    IMMEDIATE; PostgreSQL: the primary key refuses a concurrent twin)."""
    existing = set(session.scalars(select(PlatformKey.name)))
    for name in KEY_NAMES:
        if name not in existing:
            value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
            session.add(PlatformKey(name=name, value=value, created_at=now))


def platform_key(session: Session, name: str) -> bytes:
    cache_key = (str(session.get_bind().engine.url), name)
    with _lock:
        cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    stored = session.scalar(select(PlatformKey.value).where(PlatformKey.name == name))
    if stored is None:
        raise RuntimeError(f"platform key {name!r} is missing: run `flint migrate`")
    value = base64.urlsafe_b64decode(stored)
    with _lock:
        _cache[cache_key] = value
    return value
