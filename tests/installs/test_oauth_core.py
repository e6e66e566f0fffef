"""The authorization server and install lifecycle, driven through the core RPCs
exactly as the hosted web app drives them."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.apps import service as apps_service
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common import credentials, envelope
from flint.common.auth import Principal, PrincipalKind
from flint.common.errors import FlintError
from flint.common.events import EventRecord
from flint.installs import oauth, signing
from flint.installs.models import (
    AuthCodeRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
    TokenFamilyRecord,
)
from flint.installs.v1 import installs_service_pb2 as pb
from tests.conftest import bearer
from tests.errors import grpc_error
from tests.installs.oauth_support import OAuthWorld, make_world, pkce_pair


@pytest.fixture
def world(channel, db, new_partner, new_merchant) -> OAuthWorld:
    return make_world(channel, db, new_partner, new_merchant)


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def as_app(world: OAuthWorld, token: str) -> pb.Install:
    """An app-token call: the app reads its own install."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return world.installs.GetInstall(pb.GetInstallRequest(id=claims["sub"]), metadata=bearer(token))


def revoked_within_a_second(world: OAuthWorld, token: str) -> None:
    """Revocation must win within one second (the token-state cache's bound)."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            as_app(world, token)
        except grpc.RpcError as error:
            reason = grpc_error(error).reason
            break
        assert time.monotonic() < deadline, "the token still works after a second"
        time.sleep(0.02)
    assert reason == "CREDENTIAL_REVOKED"


def oauth_error_of(error: grpc.RpcError) -> str:
    return grpc_error(error).metadata["oauth_error"]


# --- the happy path -------------------------------------------------------------------


def test_full_install_flow_issues_working_tokens(world: OAuthWorld):
    prompt = world.oauth.StartAuthorization(
        pb.StartAuthorizationRequest(parameters=world.params()), metadata=bearer(world.session)
    )
    assert prompt.app_name == "Loyalty Stars"
    assert prompt.partner_name == "Acme Apps"
    assert prompt.change == pb.INSTALL_CHANGE_NEW_INSTALL
    assert [s.name for s in prompt.scopes] == ["orders:read", "events:read"]
    assert all(s.description for s in prompt.scopes)

    code = world.approve()
    assert code.code.startswith("fac_")
    assert code.state == "xyz-state"
    tokens = world.exchange(code.code)
    assert tokens.token_type == "Bearer"
    assert 3000 <= tokens.expires_in <= 3600
    assert tokens.refresh_token.startswith("frt_")
    assert tokens.scope == "orders:read events:read"
    assert tokens.environment == "test"
    assert tokens.merchant_id == world.merchant.id
    assert tokens.install_id == code.install_id

    header = jwt.get_unverified_header(tokens.access_token)
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert header["kid"]
    assert claims["sub"] == tokens.install_id
    assert claims["aud"] == "flint-api"
    assert claims["iss"].startswith("http")
    assert 3500 <= claims["exp"] - claims["iat"] <= 3600

    install = as_app(world, tokens.access_token)
    assert install.status == pb.INSTALL_STATUS_ACTIVE
    assert [g.scopes for g in install.grants] == [["orders:read", "events:read"]]


def test_token_verifies_against_the_published_jwks(world: OAuthWorld):
    tokens = world.install()
    jwks = world.oauth.GetJwks(pb.GetJwksRequest(), metadata=bearer(world.internal))
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    key = next(k for k in jwks.keys if k.kid == kid)
    public = jwt.algorithms.RSAAlgorithm.from_jwk(
        json.dumps({"kty": key.kty, "n": key.n, "e": key.e})
    )
    claims = jwt.decode(tokens.access_token, public, algorithms=["RS256"], audience="flint-api")
    assert claims["sub"] == tokens.install_id


def test_refresh_rotates_the_refresh_token(world: OAuthWorld):
    first = world.install()
    second = world.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    as_app(world, second.access_token)


def test_second_authorization_for_more_scopes_is_an_upgrade(world: OAuthWorld):
    world.install(scope="orders:read")
    prompt = world.oauth.StartAuthorization(
        pb.StartAuthorizationRequest(parameters=world.params(scope="orders:read orders:write")),
        metadata=bearer(world.session),
    )
    assert prompt.change == pb.INSTALL_CHANGE_UPGRADE
    assert [(s.name, s.granted) for s in prompt.scopes] == [
        ("orders:read", True),
        ("orders:write", False),
    ]
    tokens = world.install(scope="orders:read orders:write")
    grants = as_app(world, tokens.access_token).grants
    assert list(grants[0].scopes) == ["orders:read", "orders:write"]


def test_adding_live_to_a_test_install_is_an_upgrade_with_a_separate_grant(world: OAuthWorld):
    test_tokens = world.install()
    prompt = world.oauth.StartAuthorization(
        pb.StartAuthorizationRequest(parameters=world.params(environment="live")),
        metadata=bearer(world.session),
    )
    assert prompt.change == pb.INSTALL_CHANGE_UPGRADE
    assert list(prompt.existing_environments) == [accounts_pb.ENVIRONMENT_TEST]
    live_tokens = world.install(environment="live")
    assert live_tokens.install_id == test_tokens.install_id
    assert live_tokens.environment == "live"
    install = as_app(world, live_tokens.access_token)
    assert {g.environment for g in install.grants} == {
        accounts_pb.ENVIRONMENT_TEST,
        accounts_pb.ENVIRONMENT_LIVE,
    }


def test_install_lifecycle_events_are_recorded(world: OAuthWorld, db):
    tokens = world.install()
    world.install(environment="live")
    world.installs.RevokeGrant(
        pb.RevokeGrantRequest(id=tokens.install_id, environment=accounts_pb.ENVIRONMENT_LIVE),
        metadata=bearer(world.merchant.live_key),
    )
    world.installs.UninstallInstall(
        pb.UninstallInstallRequest(id=tokens.install_id), metadata=bearer(world.merchant.test_key)
    )
    with db.read() as session:
        events = session.scalars(
            select(EventRecord)
            .where(EventRecord.object_id == tokens.install_id)
            .order_by(EventRecord.object_version, EventRecord.environment)
        ).all()
    assert [(e.type, e.environment, e.object_version) for e in events] == [
        ("install.created", "test", 1),
        ("install.updated", "live", 2),
        ("install.grant_revoked", "live", 3),
        ("install.uninstalled", "test", 4),
    ]
    assert all(e.merchant_id == world.merchant.id for e in events)
    assert events[-1].data["status"] == "INSTALL_STATUS_UNINSTALLED"
    assert events[0].data["id"] == tokens.install_id


def test_merchant_and_partner_list_installs(world: OAuthWorld):
    tokens = world.install()
    mine = world.installs.ListInstalls(
        pb.ListInstallsRequest(), metadata=bearer(world.merchant.test_key)
    )
    assert [i.id for i in mine.installs] == [tokens.install_id]
    theirs = world.installs.ListInstalls(
        pb.ListInstallsRequest(app_id=world.app.id), metadata=bearer(world.partner.key)
    )
    assert [i.id for i in theirs.installs] == [tokens.install_id]
    assert theirs.installs[0].app_name == "Loyalty Stars"


# --- revocation takes effect at once --------------------------------------------------


def test_uninstall_stops_every_token_at_once(world: OAuthWorld):
    tokens = world.install()
    world.installs.UninstallInstall(
        pb.UninstallInstallRequest(id=tokens.install_id), metadata=bearer(world.merchant.test_key)
    )
    revoked_within_a_second(world, tokens.access_token)
    refresh = refused(lambda: world.refresh(tokens.refresh_token))
    assert oauth_error_of(refresh) == "invalid_grant"


def test_app_can_uninstall_itself(world: OAuthWorld):
    tokens = world.install()
    uninstalled = world.installs.UninstallInstall(
        pb.UninstallInstallRequest(id=tokens.install_id), metadata=bearer(tokens.access_token)
    )
    assert uninstalled.status == pb.INSTALL_STATUS_UNINSTALLED


def test_revoking_one_grant_keeps_the_other_environment(world: OAuthWorld):
    test_tokens = world.install()
    live_tokens = world.install(environment="live")
    world.installs.RevokeGrant(
        pb.RevokeGrantRequest(id=test_tokens.install_id, environment=accounts_pb.ENVIRONMENT_TEST),
        metadata=bearer(world.merchant.test_key),
    )
    revoked_within_a_second(world, test_tokens.access_token)
    assert as_app(world, live_tokens.access_token).id == live_tokens.install_id


def test_test_key_cannot_revoke_the_live_grant(world: OAuthWorld):
    tokens = world.install(environment="live")
    details = grpc_error(
        refused(
            lambda: world.installs.RevokeGrant(
                pb.RevokeGrantRequest(
                    id=tokens.install_id, environment=accounts_pb.ENVIRONMENT_LIVE
                ),
                metadata=bearer(world.merchant.test_key),
            )
        )
    )
    assert (details.code, details.reason) == ("PERMISSION_DENIED", "ENVIRONMENT_MISMATCH")


def test_revoke_endpoint_revokes_the_token_family(world: OAuthWorld):
    tokens = world.install()
    world.oauth.RevokeToken(
        pb.RevokeTokenRequest(
            token=tokens.refresh_token,
            client_id=world.app.client_id,
            client_secret=world.app.client_secret,
        ),
        metadata=bearer(world.internal),
    )
    revoked_within_a_second(world, tokens.access_token)


def test_a_confidential_clients_token_is_not_revoked_without_its_secret(world: OAuthWorld):
    # Whoever holds a leaked token and the public client_id cannot cut the app off.
    tokens = world.install()

    def revoke(secret: str) -> None:
        world.oauth.RevokeToken(
            pb.RevokeTokenRequest(
                token=tokens.refresh_token, client_id=world.app.client_id, client_secret=secret
            ),
            metadata=bearer(world.internal),
        )

    revoke("")  # answered like an unknown token
    as_app(world, tokens.access_token)
    assert world.refresh(tokens.refresh_token).access_token


def test_introspection_reports_active_then_inactive(world: OAuthWorld):
    tokens = world.install()

    def introspect(token: str) -> pb.IntrospectTokenResponse:
        return world.oauth.IntrospectToken(
            pb.IntrospectTokenRequest(
                token=token, client_id=world.app.client_id, client_secret=world.app.client_secret
            ),
            metadata=bearer(world.internal),
        )

    active = introspect(tokens.access_token)
    assert active.active
    assert active.sub == tokens.install_id
    assert active.scope == "orders:read events:read"
    assert active.environment == "test"
    assert introspect(tokens.refresh_token).active
    assert not introspect("frt_" + "x" * 40).active
    world.installs.UninstallInstall(
        pb.UninstallInstallRequest(id=tokens.install_id), metadata=bearer(world.merchant.test_key)
    )
    deadline = time.monotonic() + 1.0
    while introspect(tokens.access_token).active:
        assert time.monotonic() < deadline
        time.sleep(0.02)


# --- refused: authorization requests ---------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://loyalty.example.com/oauth/callback/",
        "https://loyalty.example.com/oauth/callback?x=1",
        "https://LOYALTY.example.com/oauth/callback",
        "https://loyalty.example.com/oauth/Callback",
        "https://loyalty.example.com/oauth",
        "",
    ],
    ids=["trailing-slash", "extra-query", "host-case", "path-case", "other-path", "missing"],
)
def test_redirect_uri_must_match_exactly_and_is_never_redirected_to(world, redirect_uri):
    error = refused(
        lambda: world.oauth.StartAuthorization(
            pb.StartAuthorizationRequest(parameters=world.params(redirect_uri=redirect_uri)),
            metadata=bearer(world.internal),
        )
    )
    details = grpc_error(error)
    assert details.metadata["redirect"] == "false"
    assert details.metadata["oauth_error"] == "invalid_request"


def test_unknown_client_is_never_redirected_to(world):
    details = grpc_error(
        refused(
            lambda: world.oauth.StartAuthorization(
                pb.StartAuthorizationRequest(parameters=world.params(client_id="ca_unknown")),
                metadata=bearer(world.internal),
            )
        )
    )
    assert (details.metadata["oauth_error"], details.metadata["redirect"]) == (
        "invalid_client",
        "false",
    )


@pytest.mark.parametrize(
    ("overrides", "oauth_error"),
    [
        ({"scope": "orders:read billing:write"}, "invalid_scope"),
        ({"scope": "orders:read nonsense:scope"}, "invalid_scope"),
        ({"scope": ""}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"environment": "staging"}, "invalid_request"),
        ({"code_challenge": "a" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "a" * 43}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
    ],
    ids=[
        "scope-not-requested-by-app",
        "unknown-scope",
        "no-scope",
        "implicit-flow",
        "unknown-environment",
        "plain-pkce",
        "pkce-without-method",
        "malformed-challenge",
    ],
)
def test_bad_authorization_requests_are_redirected_with_an_error(world, overrides, oauth_error):
    details = grpc_error(refused(lambda: world.approve(**overrides)))
    assert details.metadata["oauth_error"] == oauth_error
    assert details.metadata["redirect"] == "true"


def test_disabled_app_cannot_be_installed(world):
    apps_grpc.AppsServiceStub(world.channel).UpdateApp(
        apps_pb.UpdateAppRequest(
            app=apps_pb.App(id=world.app.id, status=apps_pb.APP_STATUS_DISABLED)
        ),
        metadata=bearer(world.partner.key),
    )
    assert oauth_error_of(refused(world.approve)) == "unauthorized_client"


def test_only_a_merchant_session_approves(world):
    details = grpc_error(
        refused(
            lambda: world.oauth.ApproveAuthorization(
                pb.ApproveAuthorizationRequest(parameters=world.params()),
                metadata=bearer(world.merchant.test_key),
            )
        )
    )
    assert details.reason == "PRINCIPAL_NOT_ALLOWED"


# --- refused: the token endpoint --------------------------------------------------------


def test_reused_code_fails_and_revokes_its_tokens(world: OAuthWorld):
    code = world.approve().code
    tokens = world.exchange(code)
    assert oauth_error_of(refused(lambda: world.exchange(code))) == "invalid_grant"
    revoked_within_a_second(world, tokens.access_token)
    assert oauth_error_of(refused(lambda: world.refresh(tokens.refresh_token))) == "invalid_grant"


def test_code_of_another_client_is_refused(world: OAuthWorld):
    other = world.new_app()
    code = world.approve().code
    error = refused(
        lambda: world.exchange(code, client_id=other.client_id, client_secret=other.client_secret)
    )
    assert oauth_error_of(error) == "invalid_grant"


def test_code_with_another_redirect_uri_is_refused(world: OAuthWorld):
    code = world.approve().code
    error = refused(lambda: world.exchange(code, redirect_uri="http://localhost:3000/callback"))
    assert oauth_error_of(error) == "invalid_grant"


def test_wrong_client_secret_is_invalid_client(world: OAuthWorld):
    code = world.approve().code
    error = refused(lambda: world.exchange(code, client_secret="fcs_" + "x" * 40))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert oauth_error_of(error) == "invalid_client"


def test_pkce_verifier_is_checked(world: OAuthWorld):
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    wrong, _ = pkce_pair()
    assert oauth_error_of(refused(lambda: world.exchange(code, code_verifier=wrong))) == (
        "invalid_grant"
    )
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    assert oauth_error_of(refused(lambda: world.exchange(code))) == "invalid_grant"
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    assert world.exchange(code, code_verifier=verifier).access_token


def test_confidential_client_must_authenticate_even_with_pkce(world: OAuthWorld):
    # Every registered app was issued a secret: PKCE proves who started the
    # flow, not who the client is, so the secret is still required.
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    error = refused(lambda: world.exchange(code, client_secret="", code_verifier=verifier))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert oauth_error_of(error) == "invalid_client"
    assert "client secret" in grpc_error(error).message
    # Without PKCE it is refused the same way.
    code = world.approve().code
    assert oauth_error_of(refused(lambda: world.exchange(code, client_secret=""))) == (
        "invalid_client"
    )


def _burnt(world: OAuthWorld, code: str, **right: str) -> None:
    """The rightful client's correct attempt after a failed one fails too."""
    assert oauth_error_of(refused(lambda: world.exchange(code, **right))) == "invalid_grant"


def test_wrong_code_verifier_burns_the_code(world: OAuthWorld):
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    wrong, _ = pkce_pair()
    assert oauth_error_of(refused(lambda: world.exchange(code, code_verifier=wrong))) == (
        "invalid_grant"
    )
    _burnt(world, code, code_verifier=verifier)


def test_missing_code_verifier_burns_the_code(world: OAuthWorld):
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    assert oauth_error_of(refused(lambda: world.exchange(code))) == "invalid_grant"
    _burnt(world, code, code_verifier=verifier)


def test_code_presented_by_another_client_is_burnt(world: OAuthWorld):
    other = world.new_app()
    code = world.approve().code
    error = refused(
        lambda: world.exchange(code, client_id=other.client_id, client_secret=other.client_secret)
    )
    assert oauth_error_of(error) == "invalid_grant"
    _burnt(world, code)


def test_wrong_redirect_uri_burns_the_code(world: OAuthWorld):
    code = world.approve().code
    error = refused(lambda: world.exchange(code, redirect_uri="http://localhost:3000/callback"))
    assert oauth_error_of(error) == "invalid_grant"
    _burnt(world, code)


def test_failed_client_authentication_burns_the_code(world: OAuthWorld):
    code = world.approve().code
    error = refused(lambda: world.exchange(code, client_secret="fcs_" + "x" * 40))
    assert oauth_error_of(error) == "invalid_client"
    _burnt(world, code)


def test_missing_client_secret_burns_the_code(world: OAuthWorld):
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    error = refused(lambda: world.exchange(code, client_secret="", code_verifier=verifier))
    assert oauth_error_of(error) == "invalid_client"
    _burnt(world, code, code_verifier=verifier)


def test_burnt_code_issues_no_tokens_and_a_good_code_still_works(world: OAuthWorld, db):
    code = world.approve().code
    refused(lambda: world.exchange(code, redirect_uri="http://localhost:3000/callback"))
    _burnt(world, code)
    with db.read() as session:
        record = session.get(AuthCodeRecord, credentials.hash_secret(code))
        assert record is not None
        assert record.used_at is not None
        assert record.family_id is None
    assert world.install().access_token


def test_unsupported_grant_type(world: OAuthWorld):
    error = refused(lambda: world.exchange("x", grant_type="password"))
    assert oauth_error_of(error) == "unsupported_grant_type"


def test_refresh_token_replay_revokes_the_family(world: OAuthWorld):
    first = world.install()
    second = world.refresh(first.refresh_token)
    assert oauth_error_of(refused(lambda: world.refresh(first.refresh_token))) == "invalid_grant"
    # The replay revoked the whole family, including the newest tokens.
    assert oauth_error_of(refused(lambda: world.refresh(second.refresh_token))) == "invalid_grant"
    revoked_within_a_second(world, second.access_token)


def test_refresh_token_of_another_client_is_refused(world: OAuthWorld):
    tokens = world.install()
    other = world.new_app()
    error = refused(
        lambda: world.refresh(
            tokens.refresh_token, client_id=other.client_id, client_secret=other.client_secret
        )
    )
    assert oauth_error_of(error) == "invalid_grant"


def _family_authenticated(db, refresh_token: str) -> bool:
    with db.read() as session:
        family_id = session.scalar(
            select(RefreshTokenRecord.family_id).where(
                RefreshTokenRecord.token_hash == credentials.hash_secret(refresh_token)
            )
        )
        family = session.get(TokenFamilyRecord, family_id)
        assert family is not None
        return family.client_authenticated


def test_refresh_of_a_confidential_family_without_the_secret_is_invalid_client(
    world: OAuthWorld, db
):
    # RFC 6749 §6: the code was exchanged with the client secret, so a leaked
    # refresh token must not be redeemable with the client_id alone.
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    tokens = world.exchange(code, code_verifier=verifier)
    assert _family_authenticated(db, tokens.refresh_token)
    error = refused(lambda: world.refresh(tokens.refresh_token, client_secret=""))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert oauth_error_of(error) == "invalid_client"
    assert "client secret" in grpc_error(error).message
    # The refusal changed nothing: the same refresh token still works with the secret.
    as_app(world, tokens.access_token)
    assert world.refresh(tokens.refresh_token).access_token


def test_refresh_of_a_confidential_family_with_a_wrong_secret_is_invalid_client(
    world: OAuthWorld,
):
    tokens = world.install()
    error = refused(lambda: world.refresh(tokens.refresh_token, client_secret="fcs_" + "x" * 40))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert oauth_error_of(error) == "invalid_client"
    assert world.refresh(tokens.refresh_token).access_token


def test_replayed_refresh_token_without_the_secret_does_not_revoke_a_confidential_family(
    world: OAuthWorld,
):
    # Only an authenticated client's replay revokes: an unauthenticated one is refused first.
    first = world.install()
    second = world.refresh(first.refresh_token)
    error = refused(lambda: world.refresh(first.refresh_token, client_secret=""))
    assert oauth_error_of(error) == "invalid_client"
    as_app(world, second.access_token)
    assert world.refresh(second.refresh_token).access_token


def test_refresh_of_a_family_issued_without_the_secret_needs_the_secret_now(world: OAuthWorld, db):
    # A family issued before confidential clients had to authenticate with PKCE
    # (client_authenticated false) refreshes only with the secret too (RFC 6749 §6).
    tokens = world.install()
    family_id = _family_id(db, tokens.refresh_token)
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(TokenFamilyRecord)
            .where(TokenFamilyRecord.id == family_id)
            .values(client_authenticated=False)
        )
        uow.commit()
    error = refused(lambda: world.refresh(tokens.refresh_token, client_secret=""))
    assert oauth_error_of(error) == "invalid_client"
    # Refused before the refresh token was spent.
    assert world.refresh(tokens.refresh_token).access_token


def _family_id(db, refresh_token: str) -> str:
    with db.read() as session:
        family_id = session.scalar(
            select(RefreshTokenRecord.family_id).where(
                RefreshTokenRecord.token_hash == credentials.hash_secret(refresh_token)
            )
        )
    assert family_id is not None
    return str(family_id)


# --- refused: forged and misdirected access tokens --------------------------------------


def _real_key(db):
    with db.read() as session:
        record = session.scalars(select(SigningKeyRecord)).first()
    pem = envelope.open_sealed(record.private_sealed, signing.aad(record.kid))
    return record.kid, serialization.load_pem_private_key(pem, None)


def _claims(world: OAuthWorld, tokens: pb.TokenResponse, **overrides: object) -> dict:
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    claims.update(overrides)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_forged_signature_is_refused(world: OAuthWorld):
    from cryptography.hazmat.primitives.asymmetric import rsa

    tokens = world.install()
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(_claims(world, tokens), attacker, algorithm="RS256", headers={"kid": kid})
    assert grpc_error(refused(lambda: as_app(world, forged))).reason == "CREDENTIAL_INVALID"


def test_expired_token_is_refused(world: OAuthWorld, db):
    tokens = world.install()
    kid, key = _real_key(db)
    past = int((datetime.now(UTC) - timedelta(hours=2)).timestamp())
    expired = jwt.encode(
        _claims(world, tokens, iat=past, exp=past + 3600),
        key,
        algorithm="RS256",
        headers={"kid": kid},
    )
    assert grpc_error(refused(lambda: as_app(world, expired))).reason == "CREDENTIAL_EXPIRED"


def test_alg_none_is_refused(world: OAuthWorld):
    tokens = world.install()
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "x"}).encode())
    payload = _b64(json.dumps(_claims(world, tokens)).encode())
    unsigned = f"{header}.{payload}."
    assert grpc_error(refused(lambda: as_app(world, unsigned))).reason in (
        "CREDENTIAL_INVALID",
        "CREDENTIAL_MALFORMED",
    )


def test_hs256_signed_with_the_public_key_is_refused(world: OAuthWorld, db):
    import hashlib
    import hmac

    tokens = world.install()
    kid, key = _real_key(db)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(_claims(world, tokens)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{payload}.{_b64(signature)}"
    assert grpc_error(refused(lambda: as_app(world, confused))).reason == "CREDENTIAL_INVALID"


def test_unknown_kid_is_refused(world: OAuthWorld, db):
    tokens = world.install()
    _, key = _real_key(db)
    token = jwt.encode(_claims(world, tokens), key, algorithm="RS256", headers={"kid": "k_nope"})
    assert grpc_error(refused(lambda: as_app(world, token))).reason == "CREDENTIAL_INVALID"


@pytest.mark.parametrize("claim", ["aud", "iss"])
def test_wrong_audience_or_issuer_is_refused(world: OAuthWorld, db, claim):
    tokens = world.install()
    kid, key = _real_key(db)
    token = jwt.encode(
        _claims(world, tokens, **{claim: "https://evil.example.com"}),
        key,
        algorithm="RS256",
        headers={"kid": kid},
    )
    assert grpc_error(refused(lambda: as_app(world, token))).reason == "CREDENTIAL_INVALID"


def test_app_token_cannot_call_partner_or_operator_methods(world: OAuthWorld):
    tokens = world.install()
    details = grpc_error(
        refused(
            lambda: apps_grpc.AppsServiceStub(world.channel).ListApps(
                apps_pb.ListAppsRequest(), metadata=bearer(tokens.access_token)
            )
        )
    )
    assert details.reason == "PRINCIPAL_NOT_ALLOWED"


def test_app_token_sees_only_its_own_install(world: OAuthWorld):
    tokens = world.install()
    other_app = world.new_app()
    other_world = OAuthWorld(
        world.channel, world.internal, world.partner, world.merchant, world.session, other_app
    )
    other_tokens = other_world.install()
    details = grpc_error(
        refused(
            lambda: world.installs.GetInstall(
                pb.GetInstallRequest(id=other_tokens.install_id),
                metadata=bearer(tokens.access_token),
            )
        )
    )
    assert details.code == "NOT_FOUND"


def test_access_token_is_bound_to_its_environment(world: OAuthWorld):
    test_tokens = world.install()
    live_tokens = world.install(environment="live")
    assert (
        jwt.decode(test_tokens.access_token, options={"verify_signature": False})["env"] == "test"
    )
    assert (
        jwt.decode(live_tokens.access_token, options={"verify_signature": False})["env"] == "live"
    )
    # Revoking live leaves the test token working and kills only the live one.
    world.installs.RevokeGrant(
        pb.RevokeGrantRequest(id=live_tokens.install_id, environment=accounts_pb.ENVIRONMENT_LIVE),
        metadata=bearer(world.merchant.live_key),
    )
    revoked_within_a_second(world, live_tokens.access_token)
    as_app(world, test_tokens.access_token)


# --- sign-in -------------------------------------------------------------------------------


def test_wrong_password_is_refused_and_rate_limited(world: OAuthWorld):
    stub = accounts_grpc.AccountsServiceStub(world.channel)

    def attempt(password: str) -> grpc.RpcError:
        return refused(
            lambda: stub.CreateMerchantSession(
                accounts_pb.CreateMerchantSessionRequest(
                    email=world.merchant.email, password=password, client_ip="203.0.113.9"
                ),
                metadata=bearer(world.internal),
            )
        )

    for _ in range(5):
        assert grpc_error(attempt("wrong password!")).reason == "INVALID_CREDENTIALS"
    limited = grpc_error(attempt("correct horse battery"))
    assert (limited.code, limited.reason) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
    assert int(limited.metadata["retry_after_seconds"]) > 0


def test_sign_out_ends_the_session(world: OAuthWorld):
    stub = accounts_grpc.AccountsServiceStub(world.channel)
    stub.RevokeMerchantSession(
        accounts_pb.RevokeMerchantSessionRequest(), metadata=bearer(world.session)
    )
    assert grpc_error(refused(world.approve)).reason == "CREDENTIAL_REVOKED"


def test_no_raw_secret_code_or_token_is_stored(world: OAuthWorld, db):
    verifier, challenge = pkce_pair()
    code = world.approve(code_challenge=challenge, code_challenge_method="S256").code
    tokens = world.exchange(code, code_verifier=verifier)
    refreshed = world.refresh(tokens.refresh_token)
    spent_code = world.approve().code
    world.exchange(spent_code)
    secrets_seen = [
        world.app.client_secret,
        world.session,
        world.internal,
        world.partner.key,
        world.merchant.test_key,
        world.merchant.live_key,
        code,
        spent_code,
        tokens.access_token,
        tokens.refresh_token,
        refreshed.access_token,
        refreshed.refresh_token,
        "correct horse battery",
        verifier,
    ]
    from sqlalchemy import inspect, text

    with db.engine.connect() as connection:
        for table in inspect(db.engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                dumped = " ".join(str(value) for value in row)
                for secret in secrets_seen:
                    assert secret not in dumped, f"a raw secret is stored in {table}"


def test_an_installed_app_cannot_be_deleted_and_a_deleted_one_is_gone(world: OAuthWorld):
    tokens = world.install()
    apps = apps_grpc.AppsServiceStub(world.channel)
    details = grpc_error(
        refused(
            lambda: apps.DeleteApp(
                apps_pb.DeleteAppRequest(id=world.app.id), metadata=bearer(world.partner.key)
            )
        )
    )
    assert (details.code, details.reason) == ("FAILED_PRECONDITION", "APP_HAS_INSTALLS")
    world.installs.UninstallInstall(
        pb.UninstallInstallRequest(id=tokens.install_id), metadata=bearer(world.merchant.test_key)
    )
    apps.DeleteApp(apps_pb.DeleteAppRequest(id=world.app.id), metadata=bearer(world.partner.key))
    gone = grpc_error(
        refused(
            lambda: world.oauth.StartAuthorization(
                pb.StartAuthorizationRequest(parameters=world.params()),
                metadata=bearer(world.internal),
            )
        )
    )
    assert (gone.metadata["oauth_error"], gone.metadata["redirect"]) == ("invalid_client", "false")
    # The merchant's record of the old install survives the app's deletion.
    install = world.installs.GetInstall(
        pb.GetInstallRequest(id=tokens.install_id), metadata=bearer(world.merchant.test_key)
    )
    assert install.status == pb.INSTALL_STATUS_UNINSTALLED


# --- concurrent approvals ---------------------------------------------------------------


def test_concurrent_approvals_adding_live_make_one_grant_and_one_event(world: OAuthWorld, db):
    """A double-clicked Approve: the second approval waits for the first and
    finds the live grant it made, instead of failing on the grant's key."""
    tokens = world.install()
    merchant = Principal(kind=PrincipalKind.MERCHANT_SESSION, id=world.merchant.id)
    params = oauth.AuthorizeParams(
        response_type="code",
        client_id=world.app.client_id,
        redirect_uri=world.params().redirect_uri,
        scope="orders:read events:read",
        state="s",
        code_challenge="",
        code_challenge_method="",
        environment="live",
    )
    first_approved, failures = threading.Event(), []

    def first() -> None:
        with db.unit_of_work() as uow:
            oauth.approve_authorization(uow, merchant, params)
            first_approved.set()
            time.sleep(0.5)
            uow.commit()

    def second() -> None:
        first_approved.wait(5)
        try:
            with db.unit_of_work() as uow:
                oauth.approve_authorization(uow, merchant, params)
                uow.commit()
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == []
    with db.read() as session:
        events = session.scalars(
            select(EventRecord).where(EventRecord.object_id == tokens.install_id)
        ).all()
    assert sorted((e.type, e.environment, e.object_version) for e in events) == [
        ("install.created", "test", 1),
        ("install.updated", "live", 2),
    ]


def test_an_app_cannot_be_deleted_while_an_install_of_it_is_being_approved(world: OAuthWorld, db):
    """The approval and DeleteApp both lock the app's row: a delete that comes
    while an approval is committing waits, then sees the install and refuses."""
    merchant = Principal(kind=PrincipalKind.MERCHANT_SESSION, id=world.merchant.id)
    partner = Principal(kind=PrincipalKind.PARTNER, id=world.partner.id)
    params = oauth.AuthorizeParams(
        response_type="code",
        client_id=world.app.client_id,
        redirect_uri=world.params().redirect_uri,
        scope="orders:read",
        state="s",
        code_challenge="",
        code_challenge_method="",
        environment="test",
    )
    approving, deleted = threading.Event(), []

    def approve() -> None:
        with db.unit_of_work() as uow:
            oauth.approve_authorization(uow, merchant, params)
            approving.set()
            time.sleep(0.5)
            uow.commit()

    def delete() -> None:
        approving.wait(5)
        try:
            with db.unit_of_work() as uow:
                apps_service.delete_app(uow, partner, world.app.id)
                uow.commit()
            deleted.append("DELETED")
        except FlintError as error:
            deleted.append(error.reason)

    threads = [threading.Thread(target=approve), threading.Thread(target=delete)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert deleted == ["APP_HAS_INSTALLS"]
