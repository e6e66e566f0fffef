"""Sign-in and sign-out: CSRF, the `next` redirect, credentials errors, cookies,
against the real core."""

from __future__ import annotations

import httpx
import pytest
from starlette.responses import Response
from starlette.testclient import TestClient

from flint.hosted import create_app
from flint.hosted import sessions as sessions_module
from tests.hosted.conftest import (
    PASSWORD,
    SECRET,
    World,
    csrf_from,
    hosted_settings,
    unique_address,
)

EMAIL = "shop@example.com"


def at(address: str) -> dict[str, str]:
    """Headers of a request that reached Envoy from `address`."""
    return {"x-forwarded-for": address}


def _post_signin(
    world: World, *, headers: dict[str, str] | None = None, **fields: str
) -> httpx.Response:
    form = {
        "csrf_token": csrf_from(world.browser.get("/hosted/signin").text),
        "email": world.merchant.email,
        "password": PASSWORD,
        "next": "/hosted/",
    }
    form.update(fields)
    response: httpx.Response = world.browser.post("/hosted/signin", data=form, headers=headers)
    return response


# --- CSRF -----------------------------------------------------------------------


def test_signin_without_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/hosted/signin")  # the browser has its CSRF cookie
    response = client.post("/hosted/signin", data={"email": EMAIL, "password": PASSWORD})
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


def test_csrf_refusal_does_not_call_the_core(world: World) -> None:
    world.browser.get("/hosted/signin")
    response = world.browser.post(
        "/hosted/signin",
        data={"csrf_token": "forged", "email": world.merchant.email, "password": PASSWORD},
    )
    assert response.status_code == 403
    assert world.calls() == []
    assert world.sign_in_attempts(world.merchant.email) == []


def test_form_rendered_before_sign_in_is_refused_after_it(world: World) -> None:
    old_token = csrf_from(world.browser.get("/hosted/signin").text)
    world.sign_in()
    response = world.browser.post("/hosted/signout", data={"csrf_token": old_token})
    assert response.status_code == 403
    assert world.calls("RevokeMerchantSession") == []
    world.consent()  # the session still works


def test_signout_without_csrf_token_is_refused(world: World) -> None:
    world.sign_in()
    response = world.browser.post("/hosted/signout", data={})
    assert response.status_code == 403
    assert world.calls("RevokeMerchantSession") == []
    world.consent()  # the session still works


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
def test_signin_refuses_to_redirect_off_site(world: World, next_value: str) -> None:
    response = _post_signin(world, next=next_value)
    assert response.status_code == 303
    assert response.headers["location"] == "/hosted/"


def test_signin_page_does_not_carry_an_off_site_next(client: TestClient) -> None:
    html = client.get("/hosted/signin", params={"next": "//evil.example/"}).text
    assert 'name="next" value="/hosted/"' in html
    assert "evil.example" not in html


def test_signin_redirects_to_a_same_site_next_unchanged(world: World) -> None:
    target = "/oauth/authorize?client_id=app_client_good&state=a%20b&scope=orders%3Aread"
    response = _post_signin(world, next=target)
    assert response.status_code == 303
    assert response.headers["location"] == target


# --- credentials ----------------------------------------------------------------


def test_signin_sets_an_httponly_lax_session_cookie(world: World) -> None:
    response = _post_signin(world)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("flint_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Max-Age=" in cookie
    assert "Secure" not in cookie  # the public URL is http://127.0.0.1


def test_signin_passes_email_password_and_client_address(world: World) -> None:
    del world.browser.headers["x-forwarded-for"]
    response = _post_signin(world)
    assert response.status_code == 303, response.text
    (call,) = world.calls("CreateMerchantSession")
    assert call.principal == world.core.internal_principal
    assert call.code == "OK"
    # The peer: no X-Forwarded-For.
    assert world.sign_in_attempts(world.merchant.email) == [("testclient", True)]


def test_signin_takes_the_address_envoy_appended_not_one_the_client_sent(world: World) -> None:
    token = csrf_from(world.browser.get("/hosted/signin").text)
    response = world.browser.post(
        "/hosted/signin",
        data={"csrf_token": token, "email": world.merchant.email, "password": PASSWORD},
        headers={"x-forwarded-for": "6.6.6.6,203.0.113.7"},
    )
    assert response.status_code == 303, response.text
    assert world.sign_in_attempts(world.merchant.email) == [("203.0.113.7", True)]


def test_signin_with_wrong_password_shows_the_form_with_a_generic_message(world: World) -> None:
    response = _post_signin(world, password="wrong password")
    assert response.status_code == 401
    html = response.text
    assert "The email or password is not correct." in html
    assert f'value="{world.merchant.email}"' in html
    assert "wrong password" not in html
    assert "flint_session" not in response.headers.get("set-cookie", "")
    (call,) = world.calls("CreateMerchantSession")
    assert (call.code, call.reason) == ("UNAUTHENTICATED", "INVALID_CREDENTIALS")


def test_signin_with_unknown_email_gets_the_same_answer(world: World) -> None:
    response = _post_signin(world, email=f"nobody-{world.request_id}@example.com")
    assert response.status_code == 401
    assert "The email or password is not correct." in response.text


def test_signin_throttled_answers_429_with_retry_after(world: World) -> None:
    attacker = unique_address()
    for _ in range(5):
        response = _post_signin(world, password="wrong password", headers=at(attacker))
        assert response.status_code == 401
    # Five more failures make the next try from there wait 2 s × 2⁵.
    world.record_failures(attacker, 5)
    response = _post_signin(world, headers=at(attacker))  # even the right password, now
    assert response.status_code == 429, response.text
    assert 0 < int(response.headers["retry-after"]) <= 64
    assert "Too many sign-in attempts. Try again in " in response.text
    assert "flint_session" not in response.headers.get("set-cookie", "")
    assert world.calls("CreateMerchantSession")[-1].reason == "RATE_LIMITED"


def test_signin_gives_the_browser_an_httponly_strict_device_cookie(world: World) -> None:
    response = _post_signin(world)
    assert response.status_code == 303, response.text
    device = next(c for c in response.headers.get_list("set-cookie") if "flint_device=" in c)
    assert device.startswith("flint_device=fdv_")
    assert "HttpOnly" in device
    assert "SameSite=strict" in device
    assert "Max-Age=7776000" in device  # 90 days
    assert "Secure" not in device  # the public URL is http://127.0.0.1
    # Signing in again with it keeps it: no new device.
    again = _post_signin(world)
    assert again.status_code == 303, again.text
    assert "flint_device=" not in again.headers.get("set-cookie", "")


def test_device_cookie_over_https_is_secure_and_host_prefixed() -> None:
    response = Response()
    sessions_module.Sessions(SECRET, secure=True).remember_device(response, "fdv_x")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-flint_device=fdv_x;")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "Path=/" in cookie


def test_attackers_address_is_throttled_while_the_merchants_browser_signs_in(
    world: World,
) -> None:
    # The merchant signed in on this browser before: it holds a device cookie.
    assert _post_signin(world).status_code == 303
    device_cookie = world.browser.cookies["flint_device"]
    world.browser.cookies.clear()
    # An attacker guesses at the account from the merchant's own address (a
    # shared office or carrier NAT), with no device cookie.
    shared = unique_address()
    for _ in range(5):
        assert _post_signin(world, password="guess", headers=at(shared)).status_code == 401
    world.record_failures(shared, 5)
    assert _post_signin(world, headers=at(shared)).status_code == 429
    # The merchant's browser, same address, same moment: signed in.
    world.browser.cookies.clear()
    world.browser.cookies.set("flint_device", device_cookie)
    response = _post_signin(world, headers=at(shared))
    assert response.status_code == 303, response.text
    assert world.calls("CreateMerchantSession")[-1].code == "OK"


def test_another_address_signs_in_after_the_attackers_failures(world: World) -> None:
    attacker = unique_address()
    for _ in range(5):
        assert _post_signin(world, password="guess", headers=at(attacker)).status_code == 401
    world.record_failures(attacker, 10)
    assert _post_signin(world, headers=at(attacker)).status_code == 429
    # A browser that never signed in, elsewhere: no lock on the account.
    response = _post_signin(world, headers=at(unique_address()))
    assert response.status_code == 303, response.text


def test_signin_with_empty_fields_is_refused_without_calling_the_core(world: World) -> None:
    response = _post_signin(world, password="")
    assert response.status_code == 400
    assert world.calls() == []


def test_signin_when_the_core_is_down_answers_503(client: TestClient) -> None:
    token = csrf_from(client.get("/hosted/signin").text)
    response = client.post(
        "/hosted/signin", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD}
    )
    assert response.status_code == 503
    assert "temporarily unavailable" in response.text


def test_session_token_never_appears_in_a_page(world: World) -> None:
    world.sign_in()
    html = world.browser.get("/hosted/").text
    assert "Corner &lt;Shop&gt;" in html  # the name, escaped
    token = world.session_token()
    assert token.startswith("fms_")
    assert token not in html


# --- sign-out -------------------------------------------------------------------


def test_signout_revokes_the_session_and_clears_the_cookie(world: World) -> None:
    world.sign_in()
    signed_in_cookies = dict(world.browser.cookies)
    token = csrf_from(world.browser.get("/hosted/").text)
    response = world.browser.post(
        "/hosted/signout", data={"csrf_token": token, "next": "/oauth/authorize?x=1"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/hosted/signin?signed_out=1&next=%2Foauth%2Fauthorize%3Fx%3D1"
    )
    assert 'flint_session=""' in response.headers["set-cookie"]
    (call,) = world.calls("RevokeMerchantSession")
    assert (call.principal, call.code) == (world.session_principal, "OK")
    assert world.browser.get("/hosted/").status_code == 302  # signed out
    # The core ended the session: the old cookie, replayed, is refused.
    world.browser.cookies.update(signed_in_cookies)
    replayed = world.browser.get("/oauth/authorize", params=world.params)
    assert replayed.status_code == 302
    assert replayed.headers["location"].startswith("/hosted/signin?next=")


# --- Secure cookies -------------------------------------------------------------


def test_https_public_url_makes_cookies_secure_and_host_prefixed() -> None:
    settings = hosted_settings(public_url="https://pay.example.com")
    with TestClient(create_app(settings), base_url="https://testserver") as https_client:
        response = https_client.get("/hosted/signin")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-flint_csrf=")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
