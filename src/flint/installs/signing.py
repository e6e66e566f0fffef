"""Access tokens: RS256 JWTs signed with rotating keys kept in the database,
their private halves sealed with the key-encryption key (`flint.common.envelope`)
and opened once per process (`KeyRing`), never on each request.

Rotation publishes the new key in the JWKS before it signs anything (so every
verifier has it in time), and keeps the old key published until the last token
it signed has expired."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from flint.common import envelope
from flint.installs.models import SigningKeyRecord

ALGORITHM = "RS256"
AUDIENCE = "flint-api"
ACCESS_TOKEN_TTL = timedelta(hours=1)
# How long a new key is published before it signs (verifier caches refresh in time).
DEFAULT_PUBLISH_AHEAD = timedelta(minutes=10)
# Tolerated clock difference between servers when checking exp/iat.
LEEWAY_SECONDS = 30


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def aad(kid: str) -> str:
    return f"signing_key:{kid}"


def _new_key(now: datetime, activates_at: datetime) -> SigningKeyRecord:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    kid = f"k_{secrets.token_hex(8)}"
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKeyRecord(
        kid=kid,
        private_sealed=envelope.seal(pem, aad(kid)),
        public_n=_b64(numbers.n),
        public_e=_b64(numbers.e),
        created_at=now,
        activates_at=activates_at,
        retires_at=None,
    )


def ensure_signing_key(session: Session, now: datetime) -> None:
    """Creates the first signing key, active at once, if there is none."""
    if session.scalar(select(SigningKeyRecord.kid).limit(1)) is None:
        session.add(_new_key(now, now))


def rotate_signing_key(
    session: Session, now: datetime, publish_ahead: timedelta = DEFAULT_PUBLISH_AHEAD
) -> SigningKeyRecord:
    """Publishes a new key that starts signing after `publish_ahead`; the keys in
    use retire once every token they may still sign has expired."""
    new = _new_key(now, now + publish_ahead)
    session.execute(
        update(SigningKeyRecord)
        .where(SigningKeyRecord.retires_at.is_(None))
        .values(retires_at=new.activates_at + ACCESS_TOKEN_TTL + timedelta(seconds=LEEWAY_SECONDS))
    )
    session.add(new)
    return new


def published_keys(session: Session, now: datetime) -> list[SigningKeyRecord]:
    return list(
        session.scalars(
            select(SigningKeyRecord)
            .where(or_(SigningKeyRecord.retires_at.is_(None), SigningKeyRecord.retires_at > now))
            .order_by(SigningKeyRecord.activates_at)
        )
    )


def jwks(session: Session, now: datetime) -> list[dict[str, str]]:
    return [
        {
            "kty": "RSA",
            "kid": k.kid,
            "use": "sig",
            "alg": ALGORITHM,
            "n": k.public_n,
            "e": k.public_e,
        }
        for k in published_keys(session, now)
    ]


@dataclass(frozen=True)
class _LoadedKey:
    kid: str
    private: Any
    public: Any
    activates_at: datetime
    retires_at: datetime | None


class KeyRing:
    """This process's copy of the published keys, reloaded when a token names an
    unknown kid (at most once per second) and every minute otherwise."""

    REFRESH_SECONDS = 60.0
    MISS_RELOAD_SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _LoadedKey] = {}
        self._loaded_at = float("-inf")

    def reload(self, session: Session, now: datetime) -> None:
        with self._lock:
            self._load(session, now)

    def _load(self, session: Session, now: datetime) -> None:
        keys: dict[str, _LoadedKey] = {}
        for record in published_keys(session, now):
            existing = self._keys.get(record.kid)
            if existing is not None:
                keys[record.kid] = existing
                continue
            pem = envelope.open_sealed(record.private_sealed, aad(record.kid))
            private = serialization.load_pem_private_key(pem, None)
            keys[record.kid] = _LoadedKey(
                record.kid, private, private.public_key(), record.activates_at, record.retires_at
            )
        self._keys = keys
        self._loaded_at = time.monotonic()

    def _ensure(self, session: Session, now: datetime, *, kid: str | None = None) -> None:
        with self._lock:
            age = time.monotonic() - self._loaded_at
            stale = age > self.REFRESH_SECONDS
            missing = kid is not None and kid not in self._keys and age > self.MISS_RELOAD_SECONDS
            if stale or missing or not self._keys:
                self._load(session, now)

    def signing_key(self, session: Session, now: datetime) -> _LoadedKey:
        self._ensure(session, now)
        active = [k for k in self._keys.values() if k.activates_at <= now]
        if not active:
            raise RuntimeError("no active signing key: run `flint migrate`")
        return max(active, key=lambda k: k.activates_at)

    def verification_key(self, session: Session, now: datetime, kid: str) -> Any | None:
        self._ensure(session, now, kid=kid)
        key = self._keys.get(kid)
        return None if key is None else key.public


_rings: dict[str, KeyRing] = {}
_rings_lock = threading.Lock()


def keyring(session: Session) -> KeyRing:
    """The key ring of the session's database (one per database, so a process
    that talks to several never mixes their keys)."""
    url = str(session.get_bind().engine.url)
    with _rings_lock:
        return _rings.setdefault(url, KeyRing())


def issue_access_token(
    session: Session, *, now: datetime, issuer: str, claims: dict[str, Any]
) -> tuple[str, int]:
    key = keyring(session).signing_key(session, now)
    expires_in = int(ACCESS_TOKEN_TTL.total_seconds())
    payload = {
        **claims,
        "iss": issuer,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + expires_in,
        "jti": secrets.token_hex(12),
    }
    token = jwt.encode(payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
    return token, expires_in


class InvalidTokenError(Exception):
    """The token is not a valid Flint access token (the message says why)."""


def decode_access_token(
    session: Session, token: str, *, now: datetime, issuer: str, verify_exp: bool = True
) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise InvalidTokenError("malformed token") from error
    if header.get("alg") != ALGORITHM:
        raise InvalidTokenError("unsupported algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidTokenError("no key id")
    key = keyring(session).verification_key(session, now, kid)
    if key is None:
        raise InvalidTokenError("unknown key id")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={
                "require": ["exp", "iat", "sub", "iss", "aud", "fid"],
                "verify_exp": verify_exp,
            },
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidTokenError("token expired") from error
    except jwt.PyJWTError as error:
        raise InvalidTokenError("invalid token") from error
    return claims
