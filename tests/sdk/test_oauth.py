"""The OAuth helpers through the real flow: authorize URL → sign in and approve
in headless Chromium → code exchange → API calls → automatic refresh → revoke."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser

from flint.sdk import (
    APIConnectionError,
    AuthenticationError,
    FlintClient,
    FlintError,
    OAuthClient,
    OAuthError,
    OAuthSession,
    Tokens,
    authorization_url,
)
from tests.e2e.test_readme_install import approve_in_browser
from tests.sdk.conftest import PASSWORD, REDIRECT_URI, Seed, order_body

pytestmark = pytest.mark.e2e


def test_authorization_url_carries_state_and_an_s256_pkce_challenge():
    url, state, verifier = authorization_url(
        "ca_1", REDIRECT_URI, ["orders:read", "events:read"], "live", base_url="https://f.example"
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith("https://f.example/oauth/authorize?")
    assert query["state"] == state
    assert query["scope"] == "orders:read events:read"
    assert query["environment"] == "live"
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(verifier) <= 128


def test_the_whole_oauth_flow_with_automatic_refresh_and_revoke(seed: Seed, browser: Browser):
    oauth = OAuthClient.discover(
        seed.client_id, seed.client_secret, base_url=seed.base_url, redirect_uri=REDIRECT_URI
    )
    assert oauth.token_endpoint == f"{seed.base_url}/oauth/token"
    request = oauth.authorization_url("orders:read orders:write events:read")
    callback = approve_in_browser(browser, request.url, seed.merchant_email, PASSWORD)
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == [request.state]

    tokens = oauth.exchange_code(query["code"][0], request.code_verifier)
    assert tokens.environment == "test"
    assert tokens.scopes == {"orders:read", "orders:write", "events:read"}

    saved: list[Tokens] = []
    session = OAuthSession(oauth, tokens, on_tokens=saved.append)
    with FlintClient(oauth=session, base_url=seed.base_url) as app:
        install = app.installs.get(tokens.install_id)
        assert install.id == tokens.install_id
        order = app.orders.create(order_body())
        assert saved == []

        # The access token "expires": the next call refreshes first, and the
        # rotated tokens reach the app's callback.
        session.expire_now()
        assert app.orders.get(order.id).id == order.id
        (refreshed,) = saved
        assert refreshed.refresh_token != tokens.refresh_token
        assert refreshed.access_token != tokens.access_token
        assert session.tokens == refreshed

        # The spent refresh token is refused.
        with pytest.raises(OAuthError) as caught:
            oauth.refresh(tokens.refresh_token)
        assert caught.value.reason == "invalid_grant"

    # Replaying the old refresh token revoked the family; start again with a
    # fresh approval to test revoke on its own.
    request = oauth.authorization_url("orders:read")
    callback = approve_in_browser_again(browser, request.url, seed.merchant_email)
    tokens = oauth.exchange_code(
        parse_qs(urlsplit(callback).query)["code"][0], request.code_verifier
    )
    session = OAuthSession(oauth, tokens)
    with FlintClient(oauth=session, base_url=seed.base_url) as app:
        assert app.installs.get(tokens.install_id).id == tokens.install_id
        session.revoke()
        with pytest.raises(AuthenticationError) as revoked:
            app.installs.get(tokens.install_id)
        assert revoked.value.reason == "CREDENTIAL_REVOKED"
    oauth.close()


def approve_in_browser_again(browser: Browser, url: str, email: str) -> str:
    """Like approve_in_browser, for an install that exists already."""
    page = browser.new_context().new_page()
    callbacks: list[str] = []
    page.route(
        "http://localhost:3000/**",
        lambda route: (callbacks.append(route.request.url), route.fulfill(status=200, body="ok")),
    )
    page.goto(url)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/oauth/authorize?**")
    page.click("button[value=approve]")
    page.wait_for_url("http://localhost:3000/**")
    page.context.close()
    (callback,) = callbacks
    return callback


def test_discovery_failures_are_flint_errors():
    def not_flint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="nothing here")

    with (
        httpx.Client(transport=httpx.MockTransport(not_flint)) as http,
        pytest.raises(FlintError) as caught,
    ):
        OAuthClient.discover("ca_1", base_url="https://f.example", http=http)
    assert caught.value.status == 404

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        httpx.Client(transport=httpx.MockTransport(unreachable)) as http,
        pytest.raises(APIConnectionError),
    ):
        OAuthClient.discover("ca_1", base_url="https://f.example", http=http)
