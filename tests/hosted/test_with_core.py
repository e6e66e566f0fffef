"""The hosted app against the real gRPC server (`flint serve` on a fresh
database): sign-in, consent, approval, and the token endpoints, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, quote_plus, urlsplit

import grpc
import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from flint.accounts import service as accounts
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common.db import Database
from flint.hosted import create_app
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.hosted.conftest import csrf_from, hosted_settings

PASSWORD = "correct horse battery"  # the password of tests.conftest.new_merchant
REDIRECT_URI = "https://loyalty.example.com/oauth/callback"


@dataclass
class World:
    browser: TestClient
    merchant: MerchantCreds
    app: apps_pb.App


@pytest.fixture(scope="module")
def internal_key(db: Database) -> str:
    with db.unit_of_work() as uow:
        key = accounts.create_internal_key(uow)
        uow.commit()
    return key.secret


@pytest.fixture
def world(
    grpc_server: int,
    channel: grpc.Channel,
    internal_key: str,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
) -> Iterator[World]:
    app = apps_grpc.AppsServiceStub(channel).CreateApp(
        apps_pb.CreateAppRequest(
            app=apps_pb.App(
                name="Loyalty Stars",
                icon_url="https://cdn.example.com/icon.png",
                redirect_uris=[REDIRECT_URI],
                requested_scopes=["orders:read", "events:read"],
            )
        ),
        metadata=bearer(new_partner.key),
    )
    settings = hosted_settings(f"127.0.0.1:{grpc_server}", internal_key=internal_key)
    with TestClient(create_app(settings), follow_redirects=False) as browser:
        yield World(browser, new_merchant, app)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(world: World, challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": world.app.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "orders:read events:read",
        "state": "state-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return params


def sign_in_through(world: World, next_url: str, password: str = PASSWORD) -> httpx.Response:
    page = world.browser.get(next_url)
    assert page.status_code == 200, page.text
    response: httpx.Response = world.browser.post(
        "/hosted/signin",
        data={
            "csrf_token": csrf_from(page.text),
            "email": world.merchant.email,
            "password": password,
            "next": parse_qs(urlsplit(next_url).query)["next"][0],
        },
    )
    return response


def approve(world: World, params: dict[str, str]) -> dict[str, list[str]]:
    """Runs the browser part of the flow; returns the callback's query."""
    first = world.browser.get("/oauth/authorize", params=params)
    assert first.status_code == 302, first.text
    signed_in = sign_in_through(world, first.headers["location"])
    assert signed_in.status_code == 303, signed_in.text
    consent = world.browser.get(signed_in.headers["location"])
    assert consent.status_code == 200, consent.text
    assert "Loyalty Stars" in consent.text
    assert "TEST" in consent.text
    decided = world.browser.post(
        "/oauth/authorize",
        data={**params, "csrf_token": csrf_from(consent.text), "decision": "approve"},
    )
    assert decided.status_code == 303, decided.text
    location = decided.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return parse_qs(urlsplit(location).query)


def client_basic(app: apps_pb.App) -> dict[str, str]:
    raw = f"{quote_plus(app.client_id)}:{quote_plus(app.client_secret)}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


def test_install_flow_from_authorize_to_tokens(world: World) -> None:
    verifier, challenge = pkce_pair()
    params = authorize_params(world, challenge)
    callback = approve(world, params)
    assert callback["state"] == [params["state"]]
    assert callback["iss"] == ["http://127.0.0.1:8080"]

    token = world.browser.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers=client_basic(world.app),
    )
    assert token.status_code == 200, token.text
    assert token.headers["cache-control"] == "no-store"
    body = token.json()
    assert body["token_type"] == "Bearer"
    assert body["merchant_id"] == world.merchant.id
    assert body["environment"] == "test"
    assert body["install_id"].startswith("ins_")
    assert set(body["scope"].split()) == {"orders:read", "events:read"}

    # The access token verifies with the published JWKS.
    keys = world.browser.get("/.well-known/jwks.json").json()["keys"]
    kid = jwt.get_unverified_header(body["access_token"])["kid"]
    (key,) = [k for k in keys if k["kid"] == kid]
    claims = jwt.decode(
        body["access_token"],
        jwt.PyJWK(key).key,
        algorithms=[key["alg"]],
        options={"verify_aud": False},
    )
    assert claims["iss"] == "http://127.0.0.1:8080"

    active = world.browser.post(
        "/oauth/introspect", data={"token": body["access_token"]}, headers=client_basic(world.app)
    )
    assert active.json()["active"] is True
    assert active.json()["install_id"] == body["install_id"]

    revoked = world.browser.post(
        "/oauth/revoke", data={"token": body["refresh_token"]}, headers=client_basic(world.app)
    )
    assert revoked.status_code == 200
    inactive = world.browser.post(
        "/oauth/introspect", data={"token": body["access_token"]}, headers=client_basic(world.app)
    )
    assert inactive.json() == {"active": False}


def test_a_replayed_code_is_invalid_grant_and_kills_its_tokens(world: World) -> None:
    verifier, challenge = pkce_pair()
    callback = approve(world, authorize_params(world, challenge))
    form = {
        "grant_type": "authorization_code",
        "code": callback["code"][0],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    first = world.browser.post("/oauth/token", data=form, headers=client_basic(world.app))
    assert first.status_code == 200, first.text
    again = world.browser.post("/oauth/token", data=form, headers=client_basic(world.app))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: tokens from a replayed code are revoked.
    introspected = world.browser.post(
        "/oauth/introspect",
        data={"token": first.json()["access_token"]},
        headers=client_basic(world.app),
    )
    assert introspected.json() == {"active": False}


def test_revoking_an_unknown_token_answers_200(world: World) -> None:
    response = world.browser.post(
        "/oauth/revoke", data={"token": "not-a-token"}, headers=client_basic(world.app)
    )
    assert response.status_code == 200


def test_wrong_client_secret_is_401_with_basic_challenge(world: World) -> None:
    raw = f"{world.app.client_id}:wrong".encode()
    response = world.browser.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT_URI},
        headers={"authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'


def test_wrong_password_shows_the_form_again(world: World) -> None:
    _, challenge = pkce_pair()
    first = world.browser.get("/oauth/authorize", params=authorize_params(world, challenge))
    response = sign_in_through(world, first.headers["location"], password="not the password")
    assert response.status_code == 401
    assert "The email or password is not correct." in response.text


def test_unknown_client_is_an_error_page(world: World) -> None:
    _, challenge = pkce_pair()
    response = world.browser.get(
        "/oauth/authorize", params=authorize_params(world, challenge, client_id="app_nope")
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_unregistered_scope_is_redirected_to_the_client(world: World) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(world, challenge, scope="refunds:write")
    response = world.browser.get("/oauth/authorize", params=params)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_scope"]
    assert query["state"] == [params["state"]]


def test_deny_sends_access_denied(world: World) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(world, challenge)
    first = world.browser.get("/oauth/authorize", params=params)
    signed_in = sign_in_through(world, first.headers["location"])
    consent = world.browser.get(signed_in.headers["location"])
    denied = world.browser.post(
        "/oauth/authorize",
        data={**params, "csrf_token": csrf_from(consent.text), "decision": "deny"},
    )
    assert denied.status_code == 303
    query = parse_qs(urlsplit(denied.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert "code" not in query


def test_adding_live_to_a_test_install_says_so(world: World) -> None:
    _, challenge = pkce_pair()
    approve(world, authorize_params(world, challenge))
    consent = world.browser.get(
        "/oauth/authorize", params=authorize_params(world, challenge, environment="live")
    )
    assert consent.status_code == 200, consent.text
    assert "LIVE" in consent.text
    assert "Adds Live to your existing Test install." in consent.text


def test_signed_out_session_no_longer_reaches_consent(world: World) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(world, challenge)
    first = world.browser.get("/oauth/authorize", params=params)
    signed_in = sign_in_through(world, first.headers["location"])
    consent = world.browser.get(signed_in.headers["location"])
    cookie_before = dict(world.browser.cookies)
    out = world.browser.post("/hosted/signout", data={"csrf_token": csrf_from(consent.text)})
    assert out.status_code == 303
    # Replaying the old cookie: the core revoked the session.
    world.browser.cookies.update(cookie_before)
    again = world.browser.get("/oauth/authorize", params=params)
    assert again.status_code == 302
    assert again.headers["location"].startswith("/hosted/signin?")
