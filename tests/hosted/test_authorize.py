"""GET and POST /oauth/authorize against the real core."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.testclient import TestClient

from tests.hosted.conftest import (
    CODE_VERIFIER,
    PARAMS,
    PUBLIC_URL,
    REDIRECT_URI,
    SCOPE,
    World,
    basic_auth,
    csrf_from,
)

REDIRECT_ORIGIN = "https://loyalty.example.com"


def _query(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


def _exchange(world: World, code: str) -> httpx.Response:
    response: httpx.Response = world.browser.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": CODE_VERIFIER,
        },
        headers=basic_auth(world.app.client_id, world.app.client_secret),
    )
    return response


# --- errors that must never be redirected -----------------------------------------


def test_unknown_client_shows_an_error_page_and_never_redirects(world: World) -> None:
    response = world.browser.get(
        "/oauth/authorize", params={**world.params, "client_id": "app_unknown"}
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Unknown client_id" in response.text
    (call,) = world.calls("StartAuthorization")
    assert call.principal == world.core.internal_principal
    assert call.reason == "OAUTH_INVALID_CLIENT"


def test_unregistered_redirect_uri_shows_an_error_page_and_never_redirects(
    world: World,
) -> None:
    response = world.browser.get(
        "/oauth/authorize", params={**world.params, "redirect_uri": "https://evil.example/cb"}
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_repeated_client_id_shows_an_error_page_without_asking_the_core(world: World) -> None:
    query = httpx.QueryParams(world.params).add("client_id", "app_other")
    response = world.browser.get(f"/oauth/authorize?{query}")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert world.calls() == []


# --- errors redirected to the client ----------------------------------------------


def test_invalid_scope_is_redirected_with_error_state_and_iss(world: World) -> None:
    response = world.browser.get("/oauth/authorize", params={**world.params, "scope": "bogus"})
    assert response.status_code == 302
    location = response.headers["location"]
    # The redirect URI's own query is kept byte for byte.
    assert location.startswith(REDIRECT_URI + "&error=invalid_scope&")
    query = _query(location)
    assert query["error"] == ["invalid_scope"]
    assert query["error_description"] == ["Unknown scope 'bogus'"]
    assert query["state"] == ["st-123"]
    assert query["iss"] == [PUBLIC_URL]
    assert query["tenant"] == ["a b"]


def test_redirected_error_without_state_carries_no_state(world: World) -> None:
    params = {key: value for key, value in world.params.items() if key != "state"}
    response = world.browser.get("/oauth/authorize", params={**params, "scope": "bogus"})
    assert response.status_code == 302
    assert "state" not in _query(response.headers["location"])


def test_repeated_state_is_redirected_as_invalid_request(world: World) -> None:
    query = httpx.QueryParams(world.params).add("state", "other")
    response = world.browser.get(f"/oauth/authorize?{query}")
    assert response.status_code == 302
    location = _query(response.headers["location"])
    assert location["error"] == ["invalid_request"]
    assert "state" in location["error_description"][0]


def test_core_down_shows_503_and_does_not_redirect(client: TestClient) -> None:
    response = client.get(
        "/oauth/authorize",
        params={**PARAMS, "client_id": "app_client_good"},
    )
    assert response.status_code == 503
    assert "location" not in response.headers


# --- sign-in on the way -------------------------------------------------------------


def test_valid_request_when_signed_out_goes_to_signin_and_back(world: World) -> None:
    response = world.browser.get("/oauth/authorize", params=world.params)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/hosted/signin"
    (next_path,) = parse_qs(location.query)["next"]
    back = urlsplit(next_path)
    assert back.path == "/oauth/authorize"
    assert {key: values[0] for key, values in parse_qs(back.query).items()} == world.params
    # Checked with the app's own key, since no merchant is signed in.
    (call,) = world.calls("StartAuthorization")
    assert (call.principal, call.code) == (world.core.internal_principal, "OK")


def test_expired_session_is_dropped_and_sent_to_signin(world: World) -> None:
    world.sign_in()
    world.expire_sessions()
    response = world.browser.get("/oauth/authorize", params=world.params)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/hosted/signin?next=")
    assert 'flint_session=""' in response.headers["set-cookie"]
    refused, checked = world.calls("StartAuthorization")
    # Refused before it had a principal.
    assert (refused.principal, refused.reason) == ("", "CREDENTIAL_REVOKED")
    assert (checked.principal, checked.code) == (world.core.internal_principal, "OK")


# --- the consent page ---------------------------------------------------------------


def test_consent_page_describes_a_new_test_install(world: World) -> None:
    world.sign_in()
    html = world.consent().text
    assert "Loyalty &lt;Stars&gt;" in html  # autoescaped
    assert "<Stars>" not in html
    assert "by Acme Apps" in html
    assert "Corner &lt;Shop&gt;" in html
    assert "TEST" in html
    assert "New install in Test." in html
    assert "See your orders, their payments and timelines" in html
    assert "Receive events about the objects it may see" in html
    assert "Already allowed" not in html
    assert "loyalty.example.com" in html
    assert 'src="https://cdn.example.com/icon.png"' in html
    (call,) = world.calls("StartAuthorization")
    assert (call.principal, call.code) == (world.session_principal, "OK")


def test_consent_page_describes_adding_live_to_a_test_install(world: World) -> None:
    world.authorization_code()  # installed in Test
    html = world.consent(environment="live").text
    assert "LIVE" in html
    assert "Adds Live to your existing Test install." in html


def test_consent_page_marks_the_scopes_already_allowed(world: World) -> None:
    world.authorization_code(scope="orders:read")  # installed in Test with one scope
    html = world.consent().text
    assert "Asks for more permissions in Test." in html
    lines = re.findall(r"<li[^>]*>(.*?)</li>", html, re.DOTALL)
    allowed = {
        match.group(1): "Already allowed" in line
        for line in lines
        if (match := re.search(r"<code>(.*?)</code>", line))
    }
    assert allowed == {"orders:read": True, "events:read": False}


def test_consent_form_carries_every_parameter_and_a_csrf_token(world: World) -> None:
    world.sign_in()
    html = world.consent().text
    for name, value in world.params.items():
        escaped = value.replace("&", "&amp;")
        assert f'name="{name}" value="{escaped}"' in html
    assert csrf_from(html)
    assert 'name="decision" value="approve"' in html
    assert 'name="decision" value="deny"' in html


def test_consent_page_allows_posting_on_to_the_redirect_origin_only(world: World) -> None:
    world.sign_in()
    csp = world.consent().headers["content-security-policy"]
    assert f"form-action 'self' {REDIRECT_ORIGIN};" in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp


def test_consent_page_is_not_stored_and_holds_no_secret(world: World) -> None:
    world.sign_in()
    response = world.consent()
    assert response.headers["cache-control"] == "no-store"
    assert world.session_token() not in response.text
    assert world.core.internal_key not in response.text


# --- the decision ---------------------------------------------------------------------


def test_decision_without_csrf_token_is_refused(world: World) -> None:
    world.sign_in()
    response = world.browser.post("/oauth/authorize", data={**world.params, "decision": "approve"})
    assert response.status_code == 403
    assert world.calls("ApproveAuthorization") == []


def test_decision_with_forged_csrf_token_is_refused(world: World) -> None:
    world.sign_in()
    response = world.browser.post(
        "/oauth/authorize", data={**world.params, "decision": "approve", "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert world.calls("ApproveAuthorization") == []


def test_approve_redirects_with_code_state_and_iss(world: World) -> None:
    world.sign_in()
    response = world.decide("approve")
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "&code=")
    query = _query(location)
    (code,) = query["code"]
    assert code.startswith("fac_")
    assert query["state"] == ["st-123"]
    assert query["iss"] == [PUBLIC_URL]
    assert query["tenant"] == ["a b"]
    (call,) = world.calls("ApproveAuthorization")
    assert (call.principal, call.code) == (world.session_principal, "OK")
    # The core got the request's PKCE challenge and scope: the code redeems with
    # the matching verifier, for exactly that scope.
    token = _exchange(world, code)
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == SCOPE


def test_deny_redirects_with_access_denied_and_issues_no_code(world: World) -> None:
    world.sign_in()
    response = world.decide("deny")
    assert response.status_code == 303
    assert response.headers["location"].startswith(REDIRECT_URI + "&error=access_denied&")
    query = _query(response.headers["location"])
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["st-123"]
    assert "code" not in query
    assert world.calls("ApproveAuthorization") == []
    # Nothing was installed: the merchant is still offered a new install.
    assert "New install in Test." in world.consent().text


def test_deny_with_a_tampered_redirect_uri_is_not_redirected(world: World) -> None:
    world.sign_in()
    page = world.consent()
    response = world.browser.post(
        "/oauth/authorize",
        data={
            **world.params,
            "redirect_uri": "https://evil.example/cb",
            "csrf_token": csrf_from(page.text),
            "decision": "deny",
        },
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "evil.example" not in response.headers.get("content-security-policy", "")


def test_decision_without_a_session_goes_to_signin(world: World) -> None:
    token = csrf_from(world.browser.get("/hosted/signin").text)
    response = world.browser.post(
        "/oauth/authorize", data={**world.params, "csrf_token": token, "decision": "approve"}
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/hosted/signin?next=%2Foauth%2Fauthorize%3F")
    assert world.calls() == []


def test_decision_other_than_approve_or_deny_is_refused(world: World) -> None:
    world.sign_in()
    response = world.decide("maybe")
    assert response.status_code == 400
    assert world.calls("ApproveAuthorization") == []


def test_approve_when_the_core_refuses_the_session_goes_to_signin(world: World) -> None:
    world.sign_in()
    page = world.consent()
    signed_in_cookies = dict(world.browser.cookies)
    # The merchant signs out elsewhere (here: the page's own sign-out form) and
    # the old session cookie comes back, e.g. from another tab.
    signed_out = world.browser.post("/hosted/signout", data={"csrf_token": csrf_from(page.text)})
    assert signed_out.status_code == 303
    world.browser.cookies.update(signed_in_cookies)
    response = world.browser.post(
        "/oauth/authorize",
        data={**world.params, "csrf_token": csrf_from(page.text), "decision": "approve"},
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/hosted/signin?next=")
    assert 'flint_session=""' in response.headers["set-cookie"]
    (call,) = world.calls("ApproveAuthorization")
    assert (call.principal, call.reason) == ("", "CREDENTIAL_REVOKED")
