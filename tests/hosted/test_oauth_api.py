"""Token, revocation, introspection and JWKS endpoints against the real core."""

from __future__ import annotations

import base64

import grpc
import httpx
import pytest
from starlette.testclient import TestClient

from flint.installs.v1 import installs_service_pb2 as installs_pb
from flint.installs.v1 import installs_service_pb2_grpc as installs_grpc
from tests.conftest import bearer
from tests.hosted.conftest import (
    CODE_VERIFIER,
    PUBLIC_URL,
    REDIRECT_URI,
    SCOPE,
    World,
    basic_auth,
)

# For what is refused before the core is asked (no code is needed then).
CODE_GRANT = {
    "grant_type": "authorization_code",
    "code": "fac_not_a_code",
    "redirect_uri": REDIRECT_URI,
    "code_verifier": CODE_VERIFIER,
}


def code_grant(world: World) -> dict[str, str]:
    """A token request for a code the merchant just approved."""
    return {**CODE_GRANT, "code": world.authorization_code()}


def good_basic(world: World) -> dict[str, str]:
    return basic_auth(world.app.client_id, world.app.client_secret)


def tokens(world: World) -> dict[str, str]:
    response = world.browser.post("/oauth/token", data=code_grant(world), headers=good_basic(world))
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def _assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error
    assert set(body) <= {"error", "error_description"}


# --- token ------------------------------------------------------------------------


def test_token_with_basic_auth_returns_the_rfc6749_response(world: World) -> None:
    response = world.browser.post("/oauth/token", data=code_grant(world), headers=good_basic(world))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "install_id",
        "merchant_id",
        "environment",
    ]
    assert body["access_token"].startswith("eyJ")
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0
    assert body["refresh_token"].startswith("frt_")
    assert body["scope"] == SCOPE
    assert body["install_id"].startswith("ins_")
    assert body["merchant_id"] == world.merchant.id
    assert body["environment"] == "test"
    (call,) = world.calls("ExchangeToken")
    assert (call.principal, call.code) == (world.core.internal_principal, "OK")


def test_token_decodes_form_urlencoded_basic_credentials(world: World) -> None:
    # RFC 6749 §2.3.1: a client may percent-encode any character; the core only
    # accepts the secret if the app decoded every one of them.
    def encoded(value: str) -> str:
        return "".join(f"%{byte:02X}" for byte in value.encode())

    raw = f"{encoded(world.app.client_id)}:{encoded(world.app.client_secret)}".encode()
    response = world.browser.post(
        "/oauth/token",
        data=code_grant(world),
        headers={"authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert response.status_code == 200, response.text


def test_token_with_client_secret_post(world: World) -> None:
    response = world.browser.post(
        "/oauth/token",
        data={
            **code_grant(world),
            "client_id": world.app.client_id,
            "client_secret": world.app.client_secret,
        },
    )
    assert response.status_code == 200, response.text


def test_token_with_a_wrong_client_secret_post_is_invalid_client(world: World) -> None:
    response = world.browser.post(
        "/oauth/token",
        data={**code_grant(world), "client_id": world.app.client_id, "client_secret": "wrong"},
    )
    _assert_oauth_error(response, 401, "invalid_client")


def test_token_without_the_client_secret_is_invalid_client_even_with_pkce(world: World) -> None:
    # Every app was issued a secret, so it is a confidential client: PKCE does
    # not stand in for client authentication.
    grant = code_grant(world)
    response = world.browser.post("/oauth/token", data={**grant, "client_id": world.app.client_id})
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    assert "client secret" in response.json()["error_description"]
    # The failed attempt burnt the code: the right request now gets invalid_grant.
    response = world.browser.post("/oauth/token", data=grant, headers=good_basic(world))
    _assert_oauth_error(response, 400, "invalid_grant")


def test_token_without_pkce_or_secret_really_sends_no_secret(world: World) -> None:
    # The core refuses it here because the app passed no secret along.
    code = world.authorization_code(code_challenge="", code_challenge_method="")
    response = world.browser.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": world.app.client_id,
        },
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert "client secret" in response.json()["error_description"]


def test_token_with_basic_and_body_secret_at_once_is_invalid_request(world: World) -> None:
    response = world.browser.post(
        "/oauth/token",
        data={**CODE_GRANT, "client_secret": world.app.client_secret},
        headers=good_basic(world),
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert world.calls() == []


def test_token_with_body_client_id_other_than_basic_is_invalid_request(world: World) -> None:
    response = world.browser.post(
        "/oauth/token", data={**CODE_GRANT, "client_id": "app_other"}, headers=good_basic(world)
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert world.calls() == []


def test_token_without_client_authentication_is_invalid_client(world: World) -> None:
    response = world.browser.post("/oauth/token", data=CODE_GRANT)
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    assert world.calls() == []


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic not-base64!", id="not-base64"),
        pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param("Bearer abc", id="other-scheme"),
    ],
)
def test_token_with_malformed_authorization_is_invalid_client(world: World, header: str) -> None:
    response = world.browser.post(
        "/oauth/token", data=CODE_GRANT, headers={"authorization": header}
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    assert world.calls() == []


def test_token_with_wrong_secret_is_401_invalid_client(world: World) -> None:
    response = world.browser.post(
        "/oauth/token", data=CODE_GRANT, headers=basic_auth(world.app.client_id, "wrong")
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    assert response.json()["error_description"] == "Client authentication failed"


def test_token_with_used_code_is_400_invalid_grant(world: World) -> None:
    grant = code_grant(world)
    first = world.browser.post("/oauth/token", data=grant, headers=good_basic(world))
    assert first.status_code == 200, first.text
    response = world.browser.post("/oauth/token", data=grant, headers=good_basic(world))
    _assert_oauth_error(response, 400, "invalid_grant")
    assert "www-authenticate" not in response.headers


def test_token_with_unknown_grant_type_is_unsupported_grant_type(world: World) -> None:
    response = world.browser.post(
        "/oauth/token", data={**CODE_GRANT, "grant_type": "password"}, headers=good_basic(world)
    )
    _assert_oauth_error(response, 400, "unsupported_grant_type")


def test_token_with_json_body_is_invalid_request(world: World) -> None:
    response = world.browser.post("/oauth/token", json=CODE_GRANT, headers=good_basic(world))
    _assert_oauth_error(response, 400, "invalid_request")
    assert world.calls() == []


def test_token_with_a_repeated_parameter_is_invalid_request(world: World) -> None:
    body = "grant_type=authorization_code&code=a&code=b"
    response = world.browser.post(
        "/oauth/token",
        content=body,
        headers={**good_basic(world), "content-type": "application/x-www-form-urlencoded"},
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert world.calls() == []


def refresh_grant(refresh_token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token}


@pytest.mark.parametrize(
    ("secret", "basic"),
    [
        pytest.param("", False, id="client-id-alone"),
        pytest.param("", True, id="basic-with-empty-secret"),
        pytest.param("wrong", True, id="basic-with-wrong-secret"),
        pytest.param("wrong", False, id="wrong-client-secret-post"),
    ],
)
def test_refresh_of_a_confidential_client_without_its_secret_is_401_invalid_client(
    world: World, secret: str, basic: bool
) -> None:
    # RFC 6749 §6: the code was exchanged with the secret, so refreshing needs it too.
    issued = tokens(world)
    body = refresh_grant(issued["refresh_token"])
    headers = basic_auth(world.app.client_id, secret) if basic else {}
    if not basic:
        body["client_id"] = world.app.client_id
        if secret:
            body["client_secret"] = secret
    response = world.browser.post("/oauth/token", data=body, headers=headers)
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    # Refused without a change: the same refresh token still works with the secret.
    response = world.browser.post(
        "/oauth/token", data=refresh_grant(issued["refresh_token"]), headers=good_basic(world)
    )
    assert response.status_code == 200, response.text


def test_refresh_without_the_secret_says_the_secret_is_needed(world: World) -> None:
    issued = tokens(world)
    response = world.browser.post(
        "/oauth/token",
        data={**refresh_grant(issued["refresh_token"]), "client_id": world.app.client_id},
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert "client secret" in response.json()["error_description"]


def test_failed_token_request_burns_the_code(world: World) -> None:
    grant = code_grant(world)
    response = world.browser.post(
        "/oauth/token",
        data={**grant, "code_verifier": "w" * 43},
        headers=good_basic(world),
    )
    _assert_oauth_error(response, 400, "invalid_grant")
    response = world.browser.post("/oauth/token", data=grant, headers=good_basic(world))
    _assert_oauth_error(response, 400, "invalid_grant")


def test_token_endpoint_refuses_get(client: TestClient) -> None:
    assert client.get("/oauth/token").status_code == 405


def test_token_when_the_core_is_down_is_503(client: TestClient) -> None:
    response = client.post(
        "/oauth/token", data=CODE_GRANT, headers=basic_auth("app_client_good", "secret")
    )
    _assert_oauth_error(response, 503, "temporarily_unavailable")


# --- revocation ---------------------------------------------------------------------


def test_revoke_answers_200_and_passes_the_token(world: World) -> None:
    issued = tokens(world)
    response = world.browser.post(
        "/oauth/revoke",
        data={"token": issued["refresh_token"], "token_type_hint": "refresh_token"},
        headers=good_basic(world),
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    (call,) = world.calls("RevokeToken")
    assert (call.principal, call.code) == (world.core.internal_principal, "OK")
    # The core revoked the whole grant: the access token is dead too.
    introspected = world.browser.post(
        "/oauth/introspect", data={"token": issued["access_token"]}, headers=good_basic(world)
    )
    assert introspected.json() == {"active": False}


def test_revoke_of_an_unknown_token_answers_200(world: World) -> None:
    response = world.browser.post(
        "/oauth/revoke", data={"token": "anything-unknown"}, headers=good_basic(world)
    )
    assert response.status_code == 200
    assert response.content == b""


def test_revoke_without_token_is_invalid_request(world: World) -> None:
    response = world.browser.post("/oauth/revoke", data={}, headers=good_basic(world))
    _assert_oauth_error(response, 400, "invalid_request")
    assert world.calls() == []


def test_revoke_with_wrong_secret_is_401(world: World) -> None:
    issued = tokens(world)
    response = world.browser.post(
        "/oauth/revoke",
        data={"token": issued["refresh_token"]},
        headers=basic_auth(world.app.client_id, "wrong"),
    )
    _assert_oauth_error(response, 401, "invalid_client")
    # Nothing was revoked.
    introspected = world.browser.post(
        "/oauth/introspect", data={"token": issued["access_token"]}, headers=good_basic(world)
    )
    assert introspected.json()["active"] is True


# --- introspection ------------------------------------------------------------------


def test_introspect_active_token(world: World) -> None:
    issued = tokens(world)
    response = world.browser.post(
        "/oauth/introspect", data={"token": issued["access_token"]}, headers=good_basic(world)
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["scope"] == SCOPE
    assert body["client_id"] == world.app.client_id
    assert isinstance(body["exp"], int)
    assert body["exp"] - body["iat"] == issued["expires_in"]
    assert body["iss"] == PUBLIC_URL
    assert body["sub"] == issued["install_id"]
    assert body["install_id"] == issued["install_id"]
    assert body["merchant_id"] == world.merchant.id
    assert body["environment"] == "test"
    (call,) = world.calls("IntrospectToken")
    assert (call.principal, call.code) == (world.core.internal_principal, "OK")


def test_introspect_inactive_token_says_only_inactive(world: World) -> None:
    response = world.browser.post(
        "/oauth/introspect", data={"token": "other"}, headers=good_basic(world)
    )
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspect_by_a_public_client_is_refused(world: World) -> None:
    response = world.browser.post(
        "/oauth/introspect", data={"token": "eyJ.any.token", "client_id": world.app.client_id}
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert world.calls() == []


def test_introspect_with_basic_and_an_empty_secret_is_refused(world: World) -> None:
    # `client_id:` in HTTP Basic authenticates no more than a bare client_id.
    issued = tokens(world)
    response = world.browser.post(
        "/oauth/introspect",
        data={"token": issued["refresh_token"]},
        headers=basic_auth(world.app.client_id, ""),
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert world.calls("IntrospectToken") == []


# --- JWKS -------------------------------------------------------------------------


def test_jwks_lists_the_public_keys_and_is_cacheable(world: World) -> None:
    response = world.browser.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    with grpc.insecure_channel(world.core.target) as channel:
        published = installs_grpc.OAuthServiceStub(channel).GetJwks(
            installs_pb.GetJwksRequest(), metadata=bearer(world.core.internal_key)
        )
    assert published.keys
    assert response.json() == {
        "keys": [
            {"kty": key.kty, "kid": key.kid, "use": key.use, "alg": key.alg, "n": key.n, "e": key.e}
            for key in published.keys
        ]
    }
    assert {key["kty"] for key in response.json()["keys"]} == {"RSA"}
    (call,) = world.calls("GetJwks")
    assert (call.principal, call.code) == (world.core.internal_principal, "OK")


def test_jwks_when_the_core_is_down_is_503_and_not_cached(client: TestClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 503
    assert response.headers["cache-control"] == "no-store"


def test_token_request_with_a_nul_character_is_invalid_request(world: World) -> None:
    # The core refuses NUL in any string; the token endpoint answers it as RFC 6749 says.
    response = world.browser.post(
        "/oauth/token",
        data={**code_grant(world), "redirect_uri": REDIRECT_URI + "\x00"},
        headers=good_basic(world),
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert "NUL" in response.json()["error_description"]
