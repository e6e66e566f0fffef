"""Per-address limits on the anonymous hosted pages (pay, payment links,
sign-in, OAuth), with the address Envoy saw — never one the client wrote — and
429 answers with Retry-After: an HTML page for browsers, RFC 6749 JSON for the
token endpoints. The limiter's clock is injected: no test waits for time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from flint.common.ratelimit import Limiter, LocalStore
from flint.hosted import create_app
from flint.hosted.ratelimit import AddressLimits
from flint.supervisor import wait_for_http
from tests.conftest import Edge, Process, free_port, start_envoy
from tests.hosted.conftest import hosted_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _client(clock: FakeClock, peer: str) -> TestClient:
    # 1 a second, a burst of 3.
    app = create_app(
        hosted_settings(), address_limits=AddressLimits(1), limiter=Limiter(LocalStore(clock))
    )
    return TestClient(app, follow_redirects=False, client=(peer, 40000))


@pytest.fixture
def from_envoy(clock: FakeClock) -> Iterator[TestClient]:
    """Requests whose peer is Envoy on the same host."""
    with _client(clock, "127.0.0.1") as client:
        yield client


@pytest.fixture
def direct(clock: FakeClock) -> Iterator[TestClient]:
    """Requests from a client that reached the app without Envoy."""
    with _client(clock, "203.0.113.7") as client:
        yield client


def _statuses(client: TestClient, path: str, count: int, **kwargs: object) -> list[int]:
    return [client.get(path, **kwargs).status_code for _ in range(count)]  # type: ignore[arg-type]


def test_signin_page_is_limited_per_address_with_retry_after(
    from_envoy: TestClient, clock: FakeClock
):
    xff = {"x-forwarded-for": "198.51.100.20"}
    assert _statuses(from_envoy, "/hosted/signin", 3, headers=xff) == [200, 200, 200]
    refused = from_envoy.get("/hosted/signin", headers=xff)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["content-type"].startswith("text/html")
    assert "Too many requests" in refused.text
    # Another address has its own bucket…
    other = {"x-forwarded-for": "198.51.100.21"}
    assert from_envoy.get("/hosted/signin", headers=other).status_code == 200
    # …and one interval later the first may come back.
    clock.now += 1
    assert from_envoy.get("/hosted/signin", headers=xff).status_code == 200


def test_a_client_cannot_dodge_the_limit_with_its_own_forwarded_for(from_envoy: TestClient):
    # Envoy appends the address it saw; whatever the client wrote stands left of it.
    statuses = [
        from_envoy.get(
            "/hosted/signin", headers={"x-forwarded-for": f"10.0.0.{i}, 198.51.100.30"}
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


def test_forwarded_for_is_ignored_when_the_request_did_not_come_through_envoy(
    direct: TestClient,
):
    statuses = [
        direct.get("/hosted/signin", headers={"x-forwarded-for": f"10.0.0.{i}"}).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_ipv6_clients_are_counted_per_64_block(from_envoy: TestClient):
    statuses = [
        from_envoy.get(
            "/hosted/signin", headers={"x-forwarded-for": f"2001:db8:1:2::{i:x}"}
        ).status_code
        for i in range(1, 5)
    ]
    assert statuses == [200, 200, 200, 429]
    fresh = from_envoy.get("/hosted/signin", headers={"x-forwarded-for": "2001:db8:1:3::1"})
    assert fresh.status_code == 200


def test_token_endpoint_refusal_is_oauth_json(from_envoy: TestClient):
    xff = {"x-forwarded-for": "198.51.100.40"}
    for _ in range(3):
        from_envoy.post("/oauth/token", data={"grant_type": "nope"}, headers=xff)
    refused = from_envoy.post("/oauth/token", data={"grant_type": "nope"}, headers=xff)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["reason"] == "RATE_LIMITED"
    assert "try again in 1 s" in body["error_description"]


def test_pay_and_payment_link_pages_share_the_address_budget(from_envoy: TestClient):
    xff = {"x-forwarded-for": "198.51.100.50"}
    # The core is unreachable in this app (503 pages): counted all the same.
    for path in ("/pay/cs_unknown", "/l/plink_unknown", "/i/in_unknown"):
        assert from_envoy.get(path, headers=xff).status_code != 429
    assert from_envoy.get("/pay/cs_unknown", headers=xff).status_code == 429


def test_health_and_static_files_are_not_limited(from_envoy: TestClient):
    assert set(_statuses(from_envoy, "/hosted/healthz", 6)) == {200}


# --- through the real Envoy -------------------------------------------------------------


HOSTED_FLAGS = ("--grpc-target", "127.0.0.1:9", "--public-url", "http://127.0.0.1:8080")


@pytest.fixture
def limited_hosted(tmp_path: Path) -> Iterator[Edge]:
    """`python -m flint.hosted` limited to 1 a second per address, behind Envoy."""
    port = free_port()
    log_path = tmp_path / "hosted.log"
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "flint.hosted", "--port", str(port), *HOSTED_FLAGS],
            env={
                **os.environ,
                "FLINT_INTERNAL_KEY": "fik_not_used_by_the_signin_page",
                "FLINT_HOSTED_RATE_LIMIT_PER_SECOND": "1",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    hosted = Process(popen, log_path)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/hosted/healthz", 30), hosted.log()
        edge = start_envoy(free_port(), tmp_path, hosted_port=port)
        try:
            yield edge
        finally:
            edge.process.stop()
    finally:
        hosted.stop()


def test_through_envoy_the_limit_follows_the_real_address_not_the_header(
    limited_hosted: Edge,
):
    started = time.monotonic()
    with httpx.Client(base_url=limited_hosted.url, timeout=10) as browser:
        responses = [
            browser.get("/hosted/signin", headers={"x-forwarded-for": f"192.0.2.{i}"})
            for i in range(8)
        ]
    elapsed = time.monotonic() - started
    statuses = [response.status_code for response in responses]
    # A burst of 3 at 1 a second, forged headers or not: at most 3 + 1 per second.
    assert statuses[:3] == [200, 200, 200]
    assert statuses.count(200) <= 3 + int(elapsed) + 1
    refused = next(response for response in responses if response.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-request-id"]
