"""One structured log line per request, never with a secret in it."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from tests.hosted.conftest import PASSWORD, World, csrf_from
from tests.hosted.test_oauth_api import code_grant, good_basic


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.getMessage()} {getattr(record, 'fields', {})}"
        for record in caplog.records
        if record.name == "flint.hosted"
    ]


def test_one_line_per_request_with_method_path_and_status(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flint.hosted"):
        client.get("/hosted/healthz", headers={"x-request-id": "req-1"})
    records = [r for r in caplog.records if r.getMessage() == "http_request"]
    assert len(records) == 1
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["method"] == "GET"
    assert fields["path"] == "/hosted/healthz"
    assert fields["status"] == 200
    assert fields["request_id"] == "req-1"


def test_oversized_body_is_logged_as_413_not_500(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flint.hosted"):
        response = client.post("/hosted/signin", content=b"a=" + b"x" * 100_000)
    assert response.status_code == 413
    records = [r for r in caplog.records if r.getMessage() == "http_request"]
    assert len(records) == 1
    assert records[0].fields["status"] == 413  # type: ignore[attr-defined]


def test_signin_log_has_no_password_or_session_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = csrf_from(world.browser.get("/hosted/signin").text)
    with caplog.at_level(logging.INFO, logger="flint.hosted"):
        response = world.browser.post(
            "/hosted/signin",
            data={"csrf_token": token, "email": world.merchant.email, "password": PASSWORD},
        )
    assert response.status_code == 303, response.text
    text = "\n".join(_lines(caplog))
    assert "http_request" in text
    assert world.merchant.id in text  # who signed in is logged
    assert PASSWORD not in text
    assert world.session_token() not in text
    assert token not in text


def test_token_log_has_no_code_secret_or_tokens(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    grant, basic = code_grant(world), good_basic(world)
    with caplog.at_level(logging.INFO, logger="flint.hosted"):
        response = world.browser.post("/oauth/token", data=grant, headers=basic)
    assert response.status_code == 200, response.text
    issued = response.json()
    text = "\n".join(_lines(caplog))
    assert "client_secret_basic" in text
    assert issued["install_id"] in text
    for secret in (
        grant["code"],
        grant["code_verifier"],
        world.app.client_secret,
        basic["authorization"],
        issued["access_token"],
        issued["refresh_token"],
    ):
        assert secret not in text
