"""The whole install flow as it runs for real: Chromium drives the hosted pages
through Envoy, and Authlib (a stock OAuth client) exchanges the code, with the
gRPC server, Envoy and the hosted app (`python -m flint.hosted`) as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from playwright.sync_api import Browser, Page, Route, sync_playwright

from flint.accounts import service as accounts
from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common.db import Database
from flint.supervisor import wait_for_envoy
from tests.conftest import Process, bearer, free_port, start_grpc_server

# Authlib warns at import that it prefers httpx2; the project pins httpx.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct horse battery"
REDIRECT_URI = "https://loyalty.example.com/oauth/callback"
SCOPE = "orders:read events:read"


@dataclass
class Stack:
    url: str  # Envoy, as browsers and OAuth clients see it
    hosted_port: int
    grpc_port: int
    internal_key: str
    hosted: Process


def wait_for_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def start_hosted(
    log_dir: Path, *, port: int, grpc_port: int, public_url: str, internal_key: str
) -> Process:
    log_path = log_dir / f"hosted-{port}.log"
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flint.hosted",
                "--port",
                str(port),
                "--grpc-target",
                f"127.0.0.1:{grpc_port}",
                "--public-url",
                public_url,
            ],
            env={
                **os.environ,
                "FLINT_INTERNAL_KEY": internal_key,
                "FLINT_HOSTED_SECRET": "e2e-secret-" + "x" * 32,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    process = Process(popen, log_path)
    if not wait_for_http(f"http://127.0.0.1:{port}/hosted/healthz", 30):
        process.stop()
        raise RuntimeError(f"hosted app did not start:\n{process.log()}")
    return process


@pytest.fixture(scope="module")
def stack(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("hosted-e2e")
    http_port, hosted_port, admin_port = free_port(), free_port(), free_port()
    public_url = f"http://127.0.0.1:{http_port}"
    with db.unit_of_work() as uow:
        internal_key = accounts.create_internal_key(uow).secret
        uow.commit()
    # The core signs tokens with the same issuer the hosted app advertises.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLINT_PUBLIC_URL", public_url)
        grpc_process, grpc_port = start_grpc_server(database_url, log_dir)
    with (log_dir / "envoy.log").open("w") as log:
        envoy = Process(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flint",
                    "envoy",
                    "--http-port",
                    str(http_port),
                    "--grpc-port",
                    str(grpc_port),
                    "--hosted-port",
                    str(hosted_port),
                    "--admin-port",
                    str(admin_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            ),
            log_dir / "envoy.log",
        )
    hosted = None
    try:
        assert wait_for_envoy(admin_port, 30), envoy.log()
        hosted = start_hosted(
            log_dir,
            port=hosted_port,
            grpc_port=grpc_port,
            public_url=public_url,
            internal_key=internal_key,
        )
        yield Stack(public_url, hosted_port, grpc_port, internal_key, hosted)
    finally:
        for process in (envoy, hosted, grpc_process):
            if process is not None:
                process.stop()


@dataclass
class Merchant:
    email: str
    name: str


@pytest.fixture
def merchant_and_app(stack: Stack, admin_key: str) -> tuple[Merchant, apps_pb.App]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        accounts_stub = accounts_grpc.AccountsServiceStub(channel)
        email = f"shop-{generate_token(6).lower()}@example.com"
        accounts_stub.CreateMerchant(
            accounts_pb.CreateMerchantRequest(
                merchant=accounts_pb.Merchant(name="Corner Shop", email=email), password=PASSWORD
            ),
            metadata=bearer(admin_key),
        )
        partner = accounts_stub.CreatePartner(
            accounts_pb.CreatePartnerRequest(partner=accounts_pb.Partner(name="Acme Apps")),
            metadata=bearer(admin_key),
        )
        app = apps_grpc.AppsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(
                app=apps_pb.App(
                    name="Loyalty Stars",
                    redirect_uris=[REDIRECT_URI],
                    requested_scopes=SCOPE.split(),
                )
            ),
            metadata=bearer(partner.partner_key.secret),
        )
    return Merchant(email, "Corner Shop"), app


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Chromium is needed at /usr/bin/chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def _phone_page(browser: Browser) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return page, violations


def test_merchant_installs_an_app_in_a_browser_and_the_app_gets_tokens(
    stack: Stack,
    browser: Browser,
    merchant_and_app: tuple[Merchant, apps_pb.App],
    tmp_path: Path,
) -> None:
    merchant, app = merchant_and_app
    meta = httpx.get(f"{stack.url}/.well-known/oauth-authorization-server").json()
    client = OAuth2Client(
        client_id=app.client_id,
        client_secret=app.client_secret,
        scope=SCOPE,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(48)
    authorize_url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier
    )

    page, violations = _phone_page(browser)
    callbacks: list[str] = []

    def app_callback(route: Route) -> None:
        callbacks.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="installed")

    page.route("https://loyalty.example.com/**", app_callback)

    page.goto(authorize_url)
    assert urlsplit(page.url).path == "/hosted/signin"
    page.screenshot(path=str(tmp_path / "signin.png"), full_page=True)
    page.fill("#email", merchant.email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")

    page.wait_for_url("**/oauth/authorize?**")
    text = page.inner_text("main")
    assert "Loyalty Stars" in text
    assert "TEST" in text
    assert "New install in Test." in text
    assert "See your orders" in text
    # The stylesheet loaded under the CSP, and the page fits a phone's width.
    colour = page.eval_on_selector("button.primary", "e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(29, 78, 216)"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "consent.png"), full_page=True)

    # The 302 to the app after the form POST passes Chrome's form-action check.
    page.click("button[value=approve]")
    page.wait_for_url("https://loyalty.example.com/**")
    (callback,) = callbacks
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == [state]
    assert query["iss"] == [meta["issuer"]]
    assert violations == []

    token = client.fetch_token(
        meta["token_endpoint"],
        authorization_response=callback,
        code_verifier=verifier,
        state=state,
    )
    assert token["token_type"] == "Bearer"
    assert token["environment"] == "test"

    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    claims = jwt.decode(
        token["access_token"],
        jwks.get_signing_key_from_jwt(token["access_token"]).key,
        algorithms=["RS256"],
        issuer=meta["issuer"],
        options={"verify_aud": False},
    )
    assert claims["iss"] == stack.url

    refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]

    client.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
    introspected = client.introspect_token(
        meta["introspection_endpoint"], token=refreshed["access_token"]
    )
    assert introspected.json() == {"active": False}
    client.close()


def test_hosted_app_stops_cleanly_on_sigterm(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    process = start_hosted(
        tmp_path,
        port=port,
        grpc_port=stack.grpc_port,
        public_url=stack.url,
        internal_key=stack.internal_key,
    )
    process.popen.send_signal(signal.SIGTERM)
    # Uvicorn finishes in-flight requests and the lifespan (closing the core
    # channel), then re-raises the signal so the exit status reports it.
    assert process.popen.wait(15) in (0, -signal.SIGTERM), process.log()
    log = process.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


def test_oauth_errors_and_headers_pass_through_envoy_unchanged(
    stack: Stack, merchant_and_app: tuple[Merchant, apps_pb.App]
) -> None:
    _, app = merchant_and_app
    response = httpx.post(
        f"{stack.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT_URI},
        auth=(app.client_id, "wrong secret"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="flint"'
    page = httpx.get(f"{stack.url}/hosted/signin")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-content-type-options"] == "nosniff"
