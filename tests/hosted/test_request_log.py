"""One structured log line per request, never with a secret in it."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from tests.hosted import fake_core
from tests.hosted.conftest import csrf_from
from tests.hosted.fake_core import FakeCore
from tests.hosted.test_oauth_api import CODE_GRANT, GOOD_BASIC


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


def test_signin_log_has_no_password_or_session_token(
    app_client: TestClient, core: FakeCore, caplog: pytest.LogCaptureFixture
) -> None:
    token = csrf_from(app_client.get("/hosted/signin").text)
    with caplog.at_level(logging.INFO, logger="flint.hosted"):
        app_client.post(
            "/hosted/signin",
            data={"csrf_token": token, "email": fake_core.EMAIL, "password": fake_core.PASSWORD},
        )
    text = "\n".join(_lines(caplog))
    assert "http_request" in text
    assert fake_core.PASSWORD not in text
    assert fake_core.SESSION_TOKEN not in text
    assert token not in text


def test_token_log_has_no_code_secret_or_tokens(
    app_client: TestClient, core: FakeCore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flint.hosted"):
        response = app_client.post("/oauth/token", data=CODE_GRANT, headers=GOOD_BASIC)
    assert response.status_code == 200
    text = "\n".join(_lines(caplog))
    assert "client_secret_basic" in text
    for secret in (
        fake_core.CODE,
        fake_core.CLIENT_SECRET,
        fake_core.ACCESS_TOKEN,
        fake_core.REFRESH_TOKEN,
        GOOD_BASIC["authorization"],
        CODE_GRANT["code_verifier"],
    ):
        assert secret not in text
