"""The cache of verified access tokens (installs/tokens.py): a token is verified
once, then trusted again — but never past its expiry, which reads exactly as it
would without the cache."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from flint.installs import tokens

LEEWAY = 30
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class ExpiredError(Exception):
    pass


class Verifier:
    """Stands in for the signature check: counts its calls, refuses once `exp`
    (plus the leeway) has passed, as jwt.decode does."""

    def __init__(self, exp: datetime) -> None:
        self.exp = int(exp.timestamp())
        self.calls = 0

    def check(self, now: datetime) -> dict[str, object]:
        self.calls += 1
        if self.exp + LEEWAY <= int(now.timestamp()):
            raise ExpiredError
        return {"exp": self.exp, "sub": "ins_1", "fid": "fam_1"}


def claims_at(token: str, verifier: Verifier, now: datetime) -> dict[str, object]:
    return tokens.verified_claims(
        token,
        database="db-1",
        issuer="https://flint.example",
        now=now,
        leeway_seconds=LEEWAY,
        verify=lambda: verifier.check(now),
    )


def test_a_verified_token_is_not_verified_again() -> None:
    token = f"eyJ.{secrets.token_hex(8)}.sig"
    verifier = Verifier(exp=NOW + timedelta(hours=1))

    first = claims_at(token, verifier, NOW)
    again = claims_at(token, verifier, NOW + timedelta(minutes=1))

    assert again == first
    assert verifier.calls == 1


def test_a_cached_token_is_refused_once_it_expires() -> None:
    token = f"eyJ.{secrets.token_hex(8)}.sig"
    expiry = NOW + timedelta(seconds=10)
    verifier = Verifier(exp=expiry)
    claims_at(token, verifier, NOW)

    # Still inside the leeway: trusted from the cache.
    claims_at(token, verifier, expiry + timedelta(seconds=LEEWAY - 1))
    assert verifier.calls == 1
    # Past it: verified again, and refused like any expired token.
    with pytest.raises(ExpiredError):
        claims_at(token, verifier, expiry + timedelta(seconds=LEEWAY))
    assert verifier.calls == 2


def test_the_cache_is_per_database_and_issuer() -> None:
    token = f"eyJ.{secrets.token_hex(8)}.sig"
    verifier = Verifier(exp=NOW + timedelta(hours=1))
    claims_at(token, verifier, NOW)

    tokens.verified_claims(
        token,
        database="db-2",
        issuer="https://flint.example",
        now=NOW,
        leeway_seconds=LEEWAY,
        verify=lambda: verifier.check(NOW),
    )
    tokens.verified_claims(
        token,
        database="db-1",
        issuer="https://other.example",
        now=NOW,
        leeway_seconds=LEEWAY,
        verify=lambda: verifier.check(NOW),
    )
    assert verifier.calls == 3
