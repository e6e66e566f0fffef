"""Fixtures for the hosted web app: the app under Starlette's TestClient, against
no core at all (pure HTTP concerns) or a fake core that speaks the contract."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from flint.hosted import HostedSettings, create_app
from tests.hosted.fake_core import FakeCore, start_fake_core

# Starlette's TestClient warns at import when it finds httpx instead of httpx2;
# the project pins httpx, so import it once with that one warning silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PUBLIC_URL = "http://127.0.0.1:8080"
SECRET = "test-secret-that-is-long-enough-0123456789"


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


@pytest.fixture(scope="session")
def fake_core() -> Iterator[FakeCore]:
    core = start_fake_core()
    yield core
    core.stop()


@pytest.fixture
def core(fake_core: FakeCore) -> FakeCore:
    fake_core.reset()
    return fake_core


@pytest.fixture
def app_client(core: FakeCore) -> Iterator[TestClient]:
    """The app talking to the fake core."""
    settings = hosted_settings(f"127.0.0.1:{core.port}")
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        yield test_client


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: TestClient, email: str = "shop@example.com") -> None:
    page = client.get("/hosted/signin")
    response = client.post(
        "/hosted/signin",
        data={
            "csrf_token": csrf_from(page.text),
            "email": email,
            "password": "correct horse battery",
            "next": "/hosted/",
        },
    )
    assert response.status_code == 303, response.text
