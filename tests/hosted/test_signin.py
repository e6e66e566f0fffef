"""Sign-in and sign-out: CSRF, the `next` redirect, credentials errors, cookies."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from flint.hosted import create_app
from flint.hosted import sessions as sessions_module
from tests.hosted import fake_core
from tests.hosted.conftest import csrf_from, hosted_settings, sign_in
from tests.hosted.fake_core import FakeCore


def _post_signin(client: TestClient, **fields: str) -> httpx.Response:
    form = {
        "csrf_token": csrf_from(client.get("/hosted/signin").text),
        "email": fake_core.EMAIL,
        "password": fake_core.PASSWORD,
        "next": "/hosted/",
    }
    form.update(fields)
    response: httpx.Response = client.post("/hosted/signin", data=form)
    return response


# --- CSRF -----------------------------------------------------------------------


def test_signin_without_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/hosted/signin")  # the browser has its CSRF cookie
    response = client.post(
        "/hosted/signin", data={"email": fake_core.EMAIL, "password": fake_core.PASSWORD}
    )
    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert "set-cookie" not in response.headers


def test_signin_with_tampered_csrf_token_is_refused(client: TestClient) -> None:
    token = csrf_from(client.get("/hosted/signin").text)
    response = client.post(
        "/hosted/signin",
        data={"csrf_token": token[:-2] + "xx", "email": "a@b.c", "password": "p"},
    )
    assert response.status_code == 403


def test_signin_with_csrf_token_of_another_browser_is_refused(client: TestClient) -> None:
    attacker = create_app(hosted_settings())
    with TestClient(attacker) as attacker_browser:
        token = csrf_from(attacker_browser.get("/hosted/signin").text)
    client.get("/hosted/signin")
    response = client.post(
        "/hosted/signin", data={"csrf_token": token, "email": "a@b.c", "password": "p"}
    )
    assert response.status_code == 403


def test_signin_without_csrf_cookie_is_refused(client: TestClient) -> None:
    token = csrf_from(client.get("/hosted/signin").text)
    client.cookies.clear()
    response = client.post(
        "/hosted/signin", data={"csrf_token": token, "email": "a@b.c", "password": "p"}
    )
    assert response.status_code == 403


def test_signin_with_expired_csrf_token_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = csrf_from(client.get("/hosted/signin").text)
    monkeypatch.setattr(sessions_module, "CSRF_MAX_AGE_SECONDS", -1)
    response = client.post(
        "/hosted/signin", data={"csrf_token": token, "email": "a@b.c", "password": "p"}
    )
    assert response.status_code == 403


def test_csrf_refusal_does_not_call_the_core(app_client: TestClient, core: FakeCore) -> None:
    app_client.get("/hosted/signin")
    response = app_client.post(
        "/hosted/signin",
        data={"csrf_token": "forged", "email": fake_core.EMAIL, "password": fake_core.PASSWORD},
    )
    assert response.status_code == 403
    assert core.calls == []


def test_form_rendered_before_sign_in_is_refused_after_it(
    app_client: TestClient, core: FakeCore
) -> None:
    old_token = csrf_from(app_client.get("/hosted/signin").text)
    sign_in(app_client)
    response = app_client.post("/hosted/signout", data={"csrf_token": old_token})
    assert response.status_code == 403
    assert core.called("RevokeMerchantSession") == []


def test_signout_without_csrf_token_is_refused(app_client: TestClient, core: FakeCore) -> None:
    sign_in(app_client)
    response = app_client.post("/hosted/signout", data={})
    assert response.status_code == 403
    assert core.called("RevokeMerchantSession") == []


# --- next -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "next_value",
    [
        pytest.param("https://evil.example/", id="absolute-url"),
        pytest.param("//evil.example/", id="scheme-relative"),
        pytest.param("/\\evil.example/", id="slash-backslash"),
        pytest.param("\\\\evil.example", id="backslashes"),
        pytest.param("/\t/evil.example", id="tab-between-slashes"),
        pytest.param("/\n/evil.example", id="newline-between-slashes"),
        pytest.param("javascript:alert(1)", id="javascript-scheme"),
        pytest.param("evil.example", id="not-a-path"),
        pytest.param("/" + "a" * 9000, id="too-long"),
    ],
)
def test_signin_refuses_to_redirect_off_site(
    app_client: TestClient, core: FakeCore, next_value: str
) -> None:
    response = _post_signin(app_client, next=next_value)
    assert response.status_code == 303
    assert response.headers["location"] == "/hosted/"


def test_signin_page_does_not_carry_an_off_site_next(client: TestClient) -> None:
    html = client.get("/hosted/signin", params={"next": "//evil.example/"}).text
    assert 'name="next" value="/hosted/"' in html
    assert "evil.example" not in html


def test_signin_redirects_to_a_same_site_next_unchanged(
    app_client: TestClient, core: FakeCore
) -> None:
    target = "/oauth/authorize?client_id=app_client_good&state=a%20b&scope=orders%3Aread"
    response = _post_signin(app_client, next=target)
    assert response.status_code == 303
    assert response.headers["location"] == target


# --- credentials ----------------------------------------------------------------


def test_signin_sets_an_httponly_lax_session_cookie(app_client: TestClient, core: FakeCore) -> None:
    response = _post_signin(app_client)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("flint_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Max-Age=" in cookie
    assert "Secure" not in cookie  # the public URL is http://127.0.0.1


def test_signin_passes_email_password_and_client_address(
    app_client: TestClient, core: FakeCore
) -> None:
    _post_signin(app_client)
    (call,) = core.called("CreateMerchantSession")
    assert call.authorization == f"Bearer {fake_core.INTERNAL_KEY}"
    assert call.request.email == fake_core.EMAIL
    assert call.request.password == fake_core.PASSWORD
    assert call.request.client_ip == "testclient"  # the peer: no X-Forwarded-For


def test_signin_takes_the_address_envoy_appended_not_one_the_client_sent(
    app_client: TestClient, core: FakeCore
) -> None:
    token = csrf_from(app_client.get("/hosted/signin").text)
    app_client.post(
        "/hosted/signin",
        data={"csrf_token": token, "email": fake_core.EMAIL, "password": fake_core.PASSWORD},
        headers={"x-forwarded-for": "6.6.6.6,203.0.113.7"},
    )
    (call,) = core.called("CreateMerchantSession")
    assert call.request.client_ip == "203.0.113.7"


def test_signin_with_wrong_password_shows_the_form_with_a_generic_message(
    app_client: TestClient, core: FakeCore
) -> None:
    response = _post_signin(app_client, password="wrong password")
    assert response.status_code == 401
    html = response.text
    assert "The email or password is not correct." in html
    assert f'value="{fake_core.EMAIL}"' in html
    assert "wrong password" not in html
    assert "flint_session" not in response.headers.get("set-cookie", "")


def test_signin_with_unknown_email_gets_the_same_answer(
    app_client: TestClient, core: FakeCore
) -> None:
    response = _post_signin(app_client, email="nobody@example.com")
    assert response.status_code == 401
    assert "The email or password is not correct." in response.text


def test_signin_rate_limited_answers_429_with_retry_after(
    app_client: TestClient, core: FakeCore
) -> None:
    response = _post_signin(app_client, email=fake_core.RATE_LIMITED_EMAIL)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "90"
    assert "Too many sign-in attempts" in response.text


def test_signin_with_empty_fields_is_refused_without_calling_the_core(
    app_client: TestClient, core: FakeCore
) -> None:
    response = _post_signin(app_client, password="")
    assert response.status_code == 400
    assert core.calls == []


def test_signin_when_the_core_is_down_answers_503(client: TestClient) -> None:
    response = _post_signin(client)
    assert response.status_code == 503
    assert "temporarily unavailable" in response.text


def test_session_token_never_appears_in_a_page(app_client: TestClient, core: FakeCore) -> None:
    sign_in(app_client)
    html = app_client.get("/hosted/").text
    assert "Corner &lt;Shop&gt;" in html  # the name, escaped
    assert fake_core.SESSION_TOKEN not in html


# --- sign-out -------------------------------------------------------------------


def test_signout_revokes_the_session_and_clears_the_cookie(
    app_client: TestClient, core: FakeCore
) -> None:
    sign_in(app_client)
    token = csrf_from(app_client.get("/hosted/").text)
    response = app_client.post(
        "/hosted/signout", data={"csrf_token": token, "next": "/oauth/authorize?x=1"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/hosted/signin?signed_out=1&next=%2Foauth%2Fauthorize%3Fx%3D1"
    )
    assert 'flint_session=""' in response.headers["set-cookie"]
    (call,) = core.called("RevokeMerchantSession")
    assert call.authorization == f"Bearer {fake_core.SESSION_TOKEN}"
    assert app_client.get("/hosted/").status_code == 302  # signed out


# --- Secure cookies -------------------------------------------------------------


def test_https_public_url_makes_cookies_secure_and_host_prefixed() -> None:
    settings = hosted_settings(public_url="https://pay.example.com")
    with TestClient(create_app(settings), base_url="https://testserver") as https_client:
        response = https_client.get("/hosted/signin")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-flint_csrf=")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
