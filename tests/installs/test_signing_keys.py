"""Signing-key rotation: published before it signs, retired after its tokens expire."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from flint.common.db import Database
from flint.installs import signing
from flint.installs.signing import KeyRing


@pytest.fixture
def fresh_db(tmp_path) -> Database:
    from flint.migrations import migrate

    database = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    migrate(database)
    return database


def test_rotation_publishes_first_signs_later_and_retires_the_old_key(fresh_db: Database):
    with fresh_db.unit_of_work() as uow:
        (old,) = signing.published_keys(uow.session, uow.now)
        new = signing.rotate_signing_key(uow.session, uow.now, timedelta(minutes=10))
        uow.commit()
        start = uow.now
    with fresh_db.read() as session:
        published = {key["kid"] for key in signing.jwks(session, start)}
        assert published == {old.kid, new.kid}
        # Before activation the old key still signs …
        assert KeyRing().signing_key(session, start + timedelta(minutes=9)).kid == old.kid
        # … after it, the new one.
        assert KeyRing().signing_key(session, start + timedelta(minutes=11)).kid == new.kid
        # The old key stays published while tokens it signed may live (1 h) …
        later = start + timedelta(minutes=10) + signing.ACCESS_TOKEN_TTL
        assert {k["kid"] for k in signing.jwks(session, later)} == {old.kid, new.kid}
        # … and goes once they have all expired.
        much_later = later + timedelta(minutes=5)
        assert {k["kid"] for k in signing.jwks(session, much_later)} == {new.kid}


def test_tokens_of_both_keys_verify_during_the_overlap(fresh_db: Database):
    issuer = "http://127.0.0.1:8080"
    claims = {"sub": "ins_1", "fid": "key_1"}
    with fresh_db.unit_of_work() as uow:
        old_token, _ = signing.issue_access_token(
            uow.session, now=uow.now, issuer=issuer, claims=claims
        )
        signing.rotate_signing_key(uow.session, uow.now, timedelta(0))
        uow.commit()
        now = uow.now
    with fresh_db.read() as session:
        # This process reloads its keys at once (others within a minute).
        signing.keyring(session).reload(session, now)
        new_key = signing.keyring(session).signing_key(session, now)
        new_token = jwt.encode(
            {**jwt.decode(old_token, options={"verify_signature": False})},
            new_key.private,
            algorithm="RS256",
            headers={"kid": new_key.kid},
        )
        assert jwt.get_unverified_header(old_token)["kid"] != new_key.kid
        for token in (old_token, new_token):
            decoded = signing.decode_access_token(session, token, now=now, issuer=issuer)
            assert decoded["sub"] == "ins_1"
