"""Security headers on every hosted response, with no core needed."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from flint.hosted import create_app
from tests.hosted.conftest import hosted_settings

STRICT_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@pytest.mark.parametrize(
    "path",
    [
        "/hosted/signin",
        "/hosted/healthz",
        "/.well-known/oauth-authorization-server",
        "/static/flint.css",
        "/hosted/no-such-page",
    ],
)
def test_every_response_has_the_strict_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_csrf_refusal_page_has_the_strict_headers(client: TestClient) -> None:
    response = client.post("/hosted/signin", data={"email": "a@b.c", "password": "x"})
    assert response.status_code == 403
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert response.headers["cache-control"] == "no-store"


def test_pages_with_forms_are_not_stored(client: TestClient) -> None:
    response = client.get("/hosted/signin")
    assert response.headers["cache-control"] == "no-store"


def test_static_files_are_cacheable(client: TestClient) -> None:
    response = client.get("/static/flint.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["cache-control"] == "public, max-age=3600"


def test_pages_have_no_inline_script_or_style(client: TestClient) -> None:
    html = client.get("/hosted/signin").text
    assert "<script" not in html
    assert "<style" not in html
    assert " style=" not in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<link rel="stylesheet" href="/static/flint.css">' in html


def test_health_endpoint_answers_ok(client: TestClient) -> None:
    response = client.get("/hosted/healthz")
    assert response.status_code == 200
    assert response.text == "ok"


def test_hsts_only_for_an_https_public_url() -> None:
    settings = hosted_settings(public_url="https://pay.example.com")
    with TestClient(create_app(settings)) as https_client:
        response = https_client.get("/hosted/healthz")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


def test_no_hsts_on_plain_http(client: TestClient) -> None:
    assert "strict-transport-security" not in client.get("/hosted/healthz").headers


def test_oversized_body_is_refused(client: TestClient) -> None:
    response = client.post("/hosted/signin", content=b"a=" + b"x" * 100_000)
    assert response.status_code == 413


def test_oversized_body_refusal_has_the_strict_headers(client: TestClient) -> None:
    response = client.post("/hosted/signin", content=b"a=" + b"x" * 100_000)
    assert response.status_code == 413
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
