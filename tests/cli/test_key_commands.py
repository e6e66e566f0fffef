"""`flint admin create-internal-key` and `flint admin rotate-signing-key`."""

from __future__ import annotations

from flint.common.db import Database
from flint.installs import signing
from flint.installs.v1 import installs_service_pb2 as pb
from flint.installs.v1 import installs_service_pb2_grpc as pb_grpc
from tests.cli.conftest import run_json
from tests.conftest import bearer


def test_internal_key_authenticates_the_hosted_apps_calls(database_url, channel):
    key = run_json(database_url, "admin", "create-internal-key")["internal_key"]
    assert key.startswith("fik_")
    jwks = pb_grpc.OAuthServiceStub(channel).GetJwks(pb.GetJwksRequest(), metadata=bearer(key))
    assert jwks.keys


def test_rotating_the_signing_key_publishes_the_new_key_before_it_signs(fresh_database_url):
    run_json(fresh_database_url, "admin", "init")  # migrates and makes the first key
    rotated = run_json(fresh_database_url, "admin", "rotate-signing-key", "--publish-ahead", "600")
    db = Database(fresh_database_url)
    try:
        with db.read() as session:
            now = db.clock()
            published = {key["kid"] for key in signing.jwks(session, now)}
            signer = signing.KeyRing().signing_key(session, now)
    finally:
        db.dispose()
    assert rotated["kid"] in published
    assert len(published) == 2
    assert signer.kid != rotated["kid"]  # not signing yet: published 10 minutes ahead
