"""Fixtures for the hosted web app under Starlette's TestClient: against no core
at all (pure HTTP concerns), or against a real `flint serve` on the session
database, with a fresh partner, app and merchant per test.

What the app asked of the core is read from the core's own request log: the app
forwards the browser's `x-request-id` to every call, and the core writes one
line per RPC with that id, the method, the outcome and who called."""

from __future__ import annotations

import base64
import json
import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote_plus

import httpx
import pytest
from sqlalchemy import select, update
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request

from flint.accounts import service as accounts
from flint.accounts.models import MerchantSessionRecord, SignInAttemptRecord
from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common.db import Database
from flint.hosted import HostedSettings, create_app
from flint.hosted.sessions import Sessions
from tests.conftest import PartnerCreds, Process, bearer, start_grpc_server

# Starlette's TestClient warns at import when it finds httpx instead of httpx2;
# the project pins httpx, so import it once with that one warning silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PUBLIC_URL = "http://127.0.0.1:8080"
SECRET = "test-secret-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
# Registered with a query of its own, which must come back byte for byte.
REDIRECT_URI = "https://loyalty.example.com/oauth/callback?tenant=a%20b"
SCOPE = "orders:read events:read"
# RFC 7636 appendix B.
CODE_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CODE_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
PARAMS = {
    "response_type": "code",
    "redirect_uri": REDIRECT_URI,
    "scope": SCOPE,
    "state": "st-123",
    "code_challenge": CODE_CHALLENGE,
    "code_challenge_method": "S256",
}


def hosted_settings(grpc_target: str = "127.0.0.1:9", **overrides: object) -> HostedSettings:
    fields: dict[str, object] = {
        "grpc_target": grpc_target,
        "internal_key": "fik_internal_test_key",
        "public_url": PUBLIC_URL,
        "secret_key": SECRET,
    }
    fields.update(overrides)
    return HostedSettings(**fields)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The app with a core address where nothing listens: for what needs no core."""
    with TestClient(create_app(hosted_settings()), follow_redirects=False) as test_client:
        yield test_client


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


# --- the real core ----------------------------------------------------------------

_LOG_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass(frozen=True)
class RpcCall:
    """One line of the core's request log."""

    method: str  # the RPC's name, e.g. "StartAuthorization"
    code: str  # "OK" or the canonical code, e.g. "UNAUTHENTICATED"
    reason: str  # the ErrorInfo reason of a failed call
    principal: str  # who called: "internal:<key id>", "merchant_session:<merchant id>"


@dataclass(frozen=True)
class CoreServer:
    process: Process
    port: int
    internal_key: str
    # How the core's log names a call made with `internal_key`.
    internal_principal: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def calls(self, request_id: str) -> list[RpcCall]:
        calls = []
        for line in self.process.log().splitlines():
            # "<date> <time> info rpc method=\"…\" code=\"OK\" … request_id=\"…\" principal=\"…\""
            parts = line.split(" ", 4)
            if len(parts) < 5 or parts[3] != "rpc":
                continue
            fields = {key: json.loads(value) for key, value in _LOG_FIELD.findall(parts[4])}
            if fields.get("request_id") == request_id:
                calls.append(
                    RpcCall(
                        fields["method"].rsplit("/", 1)[-1],
                        fields["code"],
                        fields["reason"],
                        fields["principal"],
                    )
                )
        return calls


@pytest.fixture(scope="session")
def core_server(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CoreServer]:
    """`flint serve` on the session database, for the hosted app's tests only, so
    they can read its request log. Its issuer is the hosted app's public URL."""
    with db.unit_of_work() as uow:
        key = accounts.create_internal_key(uow)
        uow.commit()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLINT_PUBLIC_URL", PUBLIC_URL)
        process, port = start_grpc_server(database_url, tmp_path_factory.mktemp("hosted-core"))
    yield CoreServer(process, port, key.secret, f"internal:{key.record.id}")
    process.stop()


@dataclass(frozen=True)
class Merchant:
    id: str
    email: str


@dataclass
class World:
    """A browser on the hosted app, a fresh merchant, and a fresh partner's app."""

    browser: TestClient
    core: CoreServer
    db: Database
    merchant: Merchant
    app: apps_pb.App
    request_id: str

    @property
    def session_principal(self) -> str:
        """How the core's log names a call made with this merchant's session."""
        return f"merchant_session:{self.merchant.id}"

    @property
    def params(self) -> dict[str, str]:
        """A valid authorization request of the app."""
        return {**PARAMS, "client_id": self.app.client_id}

    def calls(self, method: str | None = None) -> list[RpcCall]:
        """The core calls this test's requests made, in order."""
        return [
            call
            for call in self.core.calls(self.request_id)
            if method is None or call.method == method
        ]

    def sign_in(self) -> None:
        page = self.browser.get("/hosted/signin")
        response = self.browser.post(
            "/hosted/signin",
            data={
                "csrf_token": csrf_from(page.text),
                "email": self.merchant.email,
                "password": PASSWORD,
                "next": "/hosted/",
            },
        )
        assert response.status_code == 303, response.text

    def consent(self, **overrides: str) -> httpx.Response:
        """The consent page of the app's request; the merchant is signed in."""
        response: httpx.Response = self.browser.get(
            "/oauth/authorize", params={**self.params, **overrides}
        )
        assert response.status_code == 200, response.text
        return response

    def decide(self, decision: str, **overrides: str) -> httpx.Response:
        page = self.consent(**overrides)
        response: httpx.Response = self.browser.post(
            "/oauth/authorize",
            data={
                **self.params,
                **overrides,
                "csrf_token": csrf_from(page.text),
                "decision": decision,
            },
        )
        return response

    def authorization_code(self, **overrides: str) -> str:
        """Signs in and approves; returns the code the app's callback receives."""
        self.sign_in()
        response = self.decide("approve", **overrides)
        assert response.status_code == 303, response.text
        query = httpx.URL(response.headers["location"]).params
        return query["code"]

    def session_token(self) -> str:
        """The core's session token that the browser's session cookie carries."""
        sessions = Sessions(SECRET, secure=False)
        cookie = f"{sessions.session_cookie}={self.browser.cookies[sessions.session_cookie]}"
        session = sessions.current(
            Request({"type": "http", "headers": [(b"cookie", cookie.encode())]})
        )
        assert session is not None, "the browser is not signed in"
        return session.token

    def sign_in_attempts(self, email: str) -> list[tuple[str, bool]]:
        """(client address, succeeded) of each sign-in the core recorded for `email`."""
        with self.db.read() as session:
            rows = session.execute(
                select(SignInAttemptRecord.client_ip, SignInAttemptRecord.succeeded)
                .where(SignInAttemptRecord.email == email.lower())
                .order_by(SignInAttemptRecord.id)
            )
            return [(client_ip, succeeded) for client_ip, succeeded in rows]

    def record_failures(self, client_ip: str, count: int) -> None:
        """`count` wrong passwords for the merchant from `client_ip`, just now, as
        the core records them: the throttle's growing delays without the wait."""
        with self.db.unit_of_work() as uow:
            uow.session.add_all(
                SignInAttemptRecord(
                    email=self.merchant.email, client_ip=client_ip, succeeded=False, at=uow.now
                )
                for _ in range(count)
            )
            uow.commit()

    def expire_sessions(self) -> None:
        """Ends the merchant's sessions as twelve hours would, in the database
        the core reads (the core's clock cannot be moved from here)."""
        with self.db.unit_of_work() as uow:
            uow.session.execute(
                update(MerchantSessionRecord)
                .where(MerchantSessionRecord.merchant_id == self.merchant.id)
                .values(expires_at=uow.now - timedelta(seconds=1))
            )
            uow.commit()


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: form-urlencode both, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


def unique_address() -> str:
    """A private address that no other test is likely to sign in from."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@pytest.fixture
def world(
    core_server: CoreServer,
    db: Database,
    admin_key: str,
    new_partner: PartnerCreds,
    accounts_stub: accounts_grpc.AccountsServiceStub,
    apps_stub: apps_grpc.AppsServiceStub,
) -> Iterator[World]:
    email = f"shop-{secrets.token_hex(6)}@example.com"
    merchant = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            # Markup in names checks the pages' escaping.
            merchant=accounts_pb.Merchant(name="Corner <Shop>", email=email),
            password=PASSWORD,
        ),
        metadata=bearer(admin_key),
    )
    app = apps_stub.CreateApp(
        apps_pb.CreateAppRequest(
            app=apps_pb.App(
                name="Loyalty <Stars>",
                icon_url="https://cdn.example.com/icon.png",
                redirect_uris=[REDIRECT_URI],
                requested_scopes=SCOPE.split(),
            )
        ),
        metadata=bearer(new_partner.key),
    )
    request_id = f"hosted-test-{secrets.token_hex(8)}"
    settings = hosted_settings(core_server.target, internal_key=core_server.internal_key)
    # Every request arrives as Envoy sends it: X-Forwarded-For ends with the
    # browser's address. An address per test keeps the core's per-address
    # sign-in limit from carrying over between tests.
    headers = {"x-request-id": request_id, "x-forwarded-for": unique_address()}
    with TestClient(create_app(settings), follow_redirects=False, headers=headers) as browser:
        yield World(browser, core_server, db, Merchant(merchant.id, email), app, request_id)
