"""Server-side keys the platform itself needs (page-token encryption, stored
idempotent responses), kept in the database so every server process shares
them, sealed with the key-encryption key (`flint.common.envelope`) so a dump
alone does not hold them. `flint migrate` creates them; readers only read."""

from __future__ import annotations

import secrets
import threading
from datetime import datetime

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flint.common import envelope
from flint.common.db import Base

PAGE_TOKEN_KEY = "page_tokens"  # noqa: S105 - a key name
IDEMPOTENCY_KEY = "idempotency"
KEY_NAMES = (PAGE_TOKEN_KEY, IDEMPOTENCY_KEY)


class PlatformKey(Base):
    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The key, sealed (`envelope.seal`) with `aad(name)`.
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


def aad(name: str) -> str:
    return f"platform_key:{name}"


_cache: dict[tuple[str, str], bytes] = {}
_lock = threading.Lock()


def ensure_platform_keys(session: Session, now: datetime) -> None:
    """Creates any missing key. Run inside a writer transaction (SQLite: BEGIN
    IMMEDIATE; PostgreSQL: the primary key refuses a concurrent twin)."""
    existing = set(session.scalars(select(PlatformKey.name)))
    for name in KEY_NAMES:
        if name not in existing:
            value = envelope.seal(secrets.token_bytes(32), aad(name))
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
    value = envelope.open_sealed(stored, aad(name))
    with _lock:
        _cache[cache_key] = value
    return value
