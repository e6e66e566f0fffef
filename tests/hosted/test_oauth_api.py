"""Token, revocation, introspection and JWKS endpoints against the fake core."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import httpx
import pytest
from starlette.testclient import TestClient

from tests.hosted import fake_core
from tests.hosted.fake_core import FakeCore

CODE_GRANT = {
    "grant_type": "authorization_code",
    "code": fake_core.CODE,
    "redirect_uri": fake_core.REDIRECT_URI,
    "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
}


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: form-urlencode both, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


GOOD_BASIC = basic(fake_core.CLIENT_ID, fake_core.CLIENT_SECRET)


def _assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error
    assert set(body) <= {"error", "error_description"}


# --- token ------------------------------------------------------------------------


def test_token_with_basic_auth_returns_the_rfc6749_response(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post("/oauth/token", data=CODE_GRANT, headers=GOOD_BASIC)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.json() == {
        "access_token": fake_core.ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": fake_core.REFRESH_TOKEN,
        "scope": "orders:read events:read",
        "install_id": "ins_fake",
        "merchant_id": "mer_fake",
        "environment": "test",
    }


def test_token_decodes_form_urlencoded_basic_credentials(
    app_client: TestClient, core: FakeCore
) -> None:
    app_client.post("/oauth/token", data=CODE_GRANT, headers=GOOD_BASIC)
    (call,) = core.called("ExchangeToken")
    assert call.authorization == f"Bearer {fake_core.INTERNAL_KEY}"
    assert call.request.client_id == fake_core.CLIENT_ID
    assert call.request.client_secret == fake_core.CLIENT_SECRET  # "s3cret value+/&="
    assert call.request.code == fake_core.CODE
    assert call.request.code_verifier == CODE_GRANT["code_verifier"]
    assert call.request.redirect_uri == fake_core.REDIRECT_URI


def test_token_with_client_secret_post(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/token",
        data={
            **CODE_GRANT,
            "client_id": fake_core.CLIENT_ID,
            "client_secret": fake_core.CLIENT_SECRET,
        },
    )
    assert response.status_code == 200
    (call,) = core.called("ExchangeToken")
    assert call.request.client_secret == fake_core.CLIENT_SECRET


def test_token_for_a_public_client_sends_no_secret(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/token", data={**CODE_GRANT, "client_id": fake_core.CLIENT_ID}
    )
    assert response.status_code == 200
    (call,) = core.called("ExchangeToken")
    assert call.request.client_secret == ""


def test_token_with_basic_and_body_secret_at_once_is_invalid_request(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post(
        "/oauth/token",
        data={**CODE_GRANT, "client_secret": fake_core.CLIENT_SECRET},
        headers=GOOD_BASIC,
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert core.calls == []


def test_token_with_body_client_id_other_than_basic_is_invalid_request(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post(
        "/oauth/token", data={**CODE_GRANT, "client_id": "app_other"}, headers=GOOD_BASIC
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert core.calls == []


def test_token_without_client_authentication_is_invalid_client(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post("/oauth/token", data=CODE_GRANT)
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    assert core.calls == []


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic not-base64!", id="not-base64"),
        pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param("Bearer abc", id="other-scheme"),
    ],
)
def test_token_with_malformed_authorization_is_invalid_client(
    app_client: TestClient, core: FakeCore, header: str
) -> None:
    response = app_client.post("/oauth/token", data=CODE_GRANT, headers={"authorization": header})
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'


def test_token_with_wrong_secret_is_401_invalid_client(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post(
        "/oauth/token", data=CODE_GRANT, headers=basic(fake_core.CLIENT_ID, "wrong")
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    assert response.json()["error_description"] == "Client authentication failed"


def test_token_with_used_code_is_400_invalid_grant(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/token", data={**CODE_GRANT, "code": "used"}, headers=GOOD_BASIC
    )
    _assert_oauth_error(response, 400, "invalid_grant")
    assert "www-authenticate" not in response.headers


def test_token_with_unknown_grant_type_is_unsupported_grant_type(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post(
        "/oauth/token", data={**CODE_GRANT, "grant_type": "password"}, headers=GOOD_BASIC
    )
    _assert_oauth_error(response, 400, "unsupported_grant_type")


def test_token_with_json_body_is_invalid_request(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post("/oauth/token", json=CODE_GRANT, headers=GOOD_BASIC)
    _assert_oauth_error(response, 400, "invalid_request")
    assert core.calls == []


def test_token_with_a_repeated_parameter_is_invalid_request(
    app_client: TestClient, core: FakeCore
) -> None:
    body = "grant_type=authorization_code&code=a&code=b"
    response = app_client.post(
        "/oauth/token",
        content=body,
        headers={**GOOD_BASIC, "content-type": "application/x-www-form-urlencoded"},
    )
    _assert_oauth_error(response, 400, "invalid_request")
    assert core.calls == []


def test_token_endpoint_refuses_get(client: TestClient) -> None:
    assert client.get("/oauth/token").status_code == 405


def test_token_when_the_core_is_down_is_503(client: TestClient) -> None:
    response = client.post("/oauth/token", data=CODE_GRANT, headers=GOOD_BASIC)
    _assert_oauth_error(response, 503, "temporarily_unavailable")


# --- revocation ---------------------------------------------------------------------


def test_revoke_answers_200_and_passes_the_token(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/revoke",
        data={"token": "anything-unknown", "token_type_hint": "refresh_token"},
        headers=GOOD_BASIC,
    )
    assert response.status_code == 200
    assert response.content == b""
    (call,) = core.called("RevokeToken")
    assert call.request.token == "anything-unknown"
    assert call.request.token_type_hint == "refresh_token"
    assert call.request.client_secret == fake_core.CLIENT_SECRET


def test_revoke_without_token_is_invalid_request(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post("/oauth/revoke", data={}, headers=GOOD_BASIC)
    _assert_oauth_error(response, 400, "invalid_request")


def test_revoke_with_wrong_secret_is_401(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/revoke", data={"token": "t"}, headers=basic(fake_core.CLIENT_ID, "wrong")
    )
    _assert_oauth_error(response, 401, "invalid_client")


# --- introspection ------------------------------------------------------------------


def test_introspect_active_token(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/introspect", data={"token": fake_core.ACCESS_TOKEN}, headers=GOOD_BASIC
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["scope"] == "orders:read"
    assert body["client_id"] == fake_core.CLIENT_ID
    assert body["exp"] == 2_000_000_000
    assert body["install_id"] == "ins_fake"
    assert body["environment"] == "test"


def test_introspect_inactive_token_says_only_inactive(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.post("/oauth/introspect", data={"token": "other"}, headers=GOOD_BASIC)
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspect_by_a_public_client_is_refused(app_client: TestClient, core: FakeCore) -> None:
    response = app_client.post(
        "/oauth/introspect",
        data={"token": fake_core.ACCESS_TOKEN, "client_id": fake_core.CLIENT_ID},
    )
    _assert_oauth_error(response, 401, "invalid_client")
    assert core.calls == []


# --- JWKS -------------------------------------------------------------------------


def test_jwks_lists_the_public_keys_and_is_cacheable(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.json() == {
        "keys": [
            {"kty": "RSA", "kid": "key-1", "use": "sig", "alg": "RS256", "n": "AQAB-n", "e": "AQAB"}
        ]
    }
    (call,) = core.called("GetJwks")
    assert call.authorization == f"Bearer {fake_core.INTERNAL_KEY}"


def test_jwks_when_the_core_is_down_is_503_and_not_cached(client: TestClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 503
    assert response.headers["cache-control"] == "no-store"
