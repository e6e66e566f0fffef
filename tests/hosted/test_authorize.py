"""GET and POST /oauth/authorize against a fake core that speaks the contract."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
from starlette.testclient import TestClient

from tests.hosted import fake_core
from tests.hosted.conftest import PUBLIC_URL, csrf_from, sign_in
from tests.hosted.fake_core import FakeCore

REDIRECT_ORIGIN = "https://loyalty.example.com"
PARAMS = {
    "response_type": "code",
    "client_id": fake_core.CLIENT_ID,
    "redirect_uri": fake_core.REDIRECT_URI,
    "scope": "orders:read events:read",
    "state": "st-123",
    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    "code_challenge_method": "S256",
}


def _query(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


def _consent(client: TestClient, **overrides: str) -> httpx.Response:
    response: httpx.Response = client.get("/oauth/authorize", params={**PARAMS, **overrides})
    assert response.status_code == 200, response.text
    return response


def _decide(client: TestClient, decision: str, **overrides: str) -> httpx.Response:
    page = _consent(client, **overrides)
    response: httpx.Response = client.post(
        "/oauth/authorize",
        data={
            **PARAMS,
            **overrides,
            "csrf_token": csrf_from(page.text),
            "decision": decision,
        },
    )
    return response


# --- errors that must never be redirected -----------------------------------------


def test_unknown_client_shows_an_error_page_and_never_redirects(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.get("/oauth/authorize", params={**PARAMS, "client_id": "app_unknown"})
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Unknown client_id" in response.text
    (call,) = core.called("StartAuthorization")
    assert call.authorization == f"Bearer {fake_core.INTERNAL_KEY}"


def test_unregistered_redirect_uri_shows_an_error_page_and_never_redirects(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.get(
        "/oauth/authorize", params={**PARAMS, "redirect_uri": "https://evil.example/cb"}
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_repeated_client_id_shows_an_error_page_without_asking_the_core(
    app_client: TestClient, core: FakeCore
) -> None:
    query = httpx.QueryParams(PARAMS).add("client_id", "app_other")
    response = app_client.get(f"/oauth/authorize?{query}")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert core.calls == []


# --- errors redirected to the client ----------------------------------------------


def test_invalid_scope_is_redirected_with_error_state_and_iss(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.get("/oauth/authorize", params={**PARAMS, "scope": "bogus"})
    assert response.status_code == 302
    location = response.headers["location"]
    # The redirect URI's own query is kept byte for byte.
    assert location.startswith(fake_core.REDIRECT_URI + "&error=invalid_scope&")
    query = _query(location)
    assert query["error"] == ["invalid_scope"]
    assert query["error_description"] == ["Unknown scope 'bogus'"]
    assert query["state"] == ["st-123"]
    assert query["iss"] == [PUBLIC_URL]
    assert query["tenant"] == ["a b"]


def test_redirected_error_without_state_carries_no_state(
    app_client: TestClient, core: FakeCore
) -> None:
    params = {key: value for key, value in PARAMS.items() if key != "state"}
    response = app_client.get("/oauth/authorize", params={**params, "scope": "bogus"})
    assert response.status_code == 302
    assert "state" not in _query(response.headers["location"])


def test_repeated_state_is_redirected_as_invalid_request(
    app_client: TestClient, core: FakeCore
) -> None:
    query = httpx.QueryParams(PARAMS).add("state", "other")
    response = app_client.get(f"/oauth/authorize?{query}")
    assert response.status_code == 302
    location = _query(response.headers["location"])
    assert location["error"] == ["invalid_request"]
    assert "state" in location["error_description"][0]


def test_core_down_shows_503_and_does_not_redirect(client: TestClient) -> None:
    response = client.get("/oauth/authorize", params=PARAMS)
    assert response.status_code == 503
    assert "location" not in response.headers


# --- sign-in on the way -------------------------------------------------------------


def test_valid_request_when_signed_out_goes_to_signin_and_back(
    app_client: TestClient, core: FakeCore
) -> None:
    response = app_client.get("/oauth/authorize", params=PARAMS)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/hosted/signin"
    (next_path,) = parse_qs(location.query)["next"]
    back = urlsplit(next_path)
    assert back.path == "/oauth/authorize"
    assert {key: values[0] for key, values in parse_qs(back.query).items()} == PARAMS


def test_expired_session_is_dropped_and_sent_to_signin(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client, email=fake_core.EXPIRED_EMAIL)
    response = app_client.get("/oauth/authorize", params=PARAMS)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/hosted/signin?next=")
    assert 'flint_session=""' in response.headers["set-cookie"]


# --- the consent page ---------------------------------------------------------------


def test_consent_page_describes_a_new_test_install(app_client: TestClient, core: FakeCore) -> None:
    sign_in(app_client)
    html = _consent(app_client).text
    assert "Loyalty &lt;Stars&gt;" in html  # autoescaped
    assert "<Stars>" not in html
    assert "by Acme Apps" in html
    assert "TEST" in html
    assert "New install in Test." in html
    assert "See your orders" in html
    assert "Receive events" in html
    assert "loyalty.example.com" in html
    assert 'src="https://cdn.example.com/icon.png"' in html
    (call,) = core.called("StartAuthorization")
    assert call.authorization == f"Bearer {fake_core.SESSION_TOKEN}"


def test_consent_page_describes_adding_live_to_a_test_install(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    html = _consent(app_client, environment="live").text
    assert "LIVE" in html
    assert "Adds Live to your existing Test install." in html
    assert "Already allowed" in html


def test_consent_form_carries_every_parameter_and_a_csrf_token(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    html = _consent(app_client).text
    for name, value in PARAMS.items():
        escaped = value.replace("&", "&amp;")
        assert f'name="{name}" value="{escaped}"' in html
    assert csrf_from(html)
    assert 'name="decision" value="approve"' in html
    assert 'name="decision" value="deny"' in html


def test_consent_page_allows_posting_on_to_the_redirect_origin_only(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    csp = _consent(app_client).headers["content-security-policy"]
    assert f"form-action 'self' {REDIRECT_ORIGIN};" in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp


def test_consent_page_is_not_stored_and_holds_no_secret(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    response = _consent(app_client)
    assert response.headers["cache-control"] == "no-store"
    assert fake_core.SESSION_TOKEN not in response.text
    assert fake_core.INTERNAL_KEY not in response.text


# --- the decision ---------------------------------------------------------------------


def test_decision_without_csrf_token_is_refused(app_client: TestClient, core: FakeCore) -> None:
    sign_in(app_client)
    response = app_client.post("/oauth/authorize", data={**PARAMS, "decision": "approve"})
    assert response.status_code == 403
    assert core.called("ApproveAuthorization") == []


def test_decision_with_forged_csrf_token_is_refused(app_client: TestClient, core: FakeCore) -> None:
    sign_in(app_client)
    response = app_client.post(
        "/oauth/authorize", data={**PARAMS, "decision": "approve", "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert core.called("ApproveAuthorization") == []


def test_approve_redirects_with_code_state_and_iss(app_client: TestClient, core: FakeCore) -> None:
    sign_in(app_client)
    response = _decide(app_client, "approve")
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(fake_core.REDIRECT_URI + "&code=")
    query = _query(location)
    assert query["code"] == [fake_core.CODE]
    assert query["state"] == ["st-123"]
    assert query["iss"] == [PUBLIC_URL]
    (call,) = core.called("ApproveAuthorization")
    assert call.authorization == f"Bearer {fake_core.SESSION_TOKEN}"
    assert call.request.parameters.code_challenge == PARAMS["code_challenge"]
    assert call.request.parameters.scope == PARAMS["scope"]


def test_deny_redirects_with_access_denied_and_issues_no_code(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    response = _decide(app_client, "deny")
    assert response.status_code == 303
    query = _query(response.headers["location"])
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["st-123"]
    assert "code" not in query
    assert core.called("ApproveAuthorization") == []


def test_deny_with_a_tampered_redirect_uri_is_not_redirected(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    page = _consent(app_client)
    response = app_client.post(
        "/oauth/authorize",
        data={
            **PARAMS,
            "redirect_uri": "https://evil.example/cb",
            "csrf_token": csrf_from(page.text),
            "decision": "deny",
        },
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_decision_without_a_session_goes_to_signin(app_client: TestClient, core: FakeCore) -> None:
    token = csrf_from(app_client.get("/hosted/signin").text)
    response = app_client.post(
        "/oauth/authorize", data={**PARAMS, "csrf_token": token, "decision": "approve"}
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/hosted/signin?next=%2Foauth%2Fauthorize%3F")
    assert core.calls == []


def test_decision_other_than_approve_or_deny_is_refused(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    response = _decide(app_client, "maybe")
    assert response.status_code == 400
    assert core.called("ApproveAuthorization") == []


def test_approve_when_the_core_refuses_the_session_goes_to_signin(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    page = _consent(app_client)
    core.failure = (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REVOKED", {})
    response = app_client.post(
        "/oauth/authorize",
        data={**PARAMS, "csrf_token": csrf_from(page.text), "decision": "approve"},
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/hosted/signin?next=")
