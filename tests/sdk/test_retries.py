"""Retry rules of the transport, against a scripted HTTP server (httpx
MockTransport): what is retried, with which Idempotency-Key, and what is not."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from flint.sdk import (
    APIConnectionError,
    ConflictError,
    FlintClient,
    InvalidRequestError,
    OAuthSession,
    ServerError,
    Tokens,
)
from tests.sdk.conftest import order_body

ORDER = {"id": "ord_1", "currency": "usd", "total": "1250"}


def status(http: int, code: int, reason: str) -> httpx.Response:
    body = {
        "code": code,
        "message": reason.lower(),
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}],
    }
    return httpx.Response(http, json=body, headers={"x-request-id": "req-1"})


def scripted(
    *answers: httpx.Response | type[Exception],
) -> tuple[FlintClient, list[httpx.Request], list[float]]:
    requests: list[httpx.Request] = []
    script = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        answer = script.pop(0)
        if isinstance(answer, type):
            raise answer("scripted failure")
        return answer

    sleeps: list[float] = []
    client = FlintClient(
        api_key="sk_test_x",
        base_url="http://flint.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    client.transport.sleep = sleeps.append
    return client, requests, sleeps


def keys(requests: list[httpx.Request]) -> list[str | None]:
    return [r.headers.get("idempotency-key") for r in requests]


@pytest.mark.parametrize(
    "failure",
    [
        status(503, 14, "UPSTREAM_UNAVAILABLE"),
        status(500, 13, "INTERNAL"),
        status(429, 8, "RATE_LIMITED"),
        status(409, 10, "IDEMPOTENCY_KEY_IN_USE"),
        httpx.ReadError,
        httpx.RemoteProtocolError,
    ],
    ids=["503", "500", "429", "409-in-use", "read-error", "dropped-response"],
)
def test_a_write_is_retried_with_the_same_idempotency_key(failure: object):
    client, requests, sleeps = scripted(failure, httpx.Response(200, json=ORDER))  # type: ignore[arg-type]
    order = client.orders.create(order_body())
    assert order.id == "ord_1"
    assert order.total == 1250
    first, second = keys(requests)
    assert first == second
    assert first is not None
    assert len(first) == 36
    assert len(sleeps) == 1


def test_each_call_gets_its_own_key_unless_the_caller_gives_one():
    client, requests, _ = scripted(*(httpx.Response(200, json=ORDER) for _ in range(3)))
    client.orders.create(order_body())
    client.orders.create(order_body())
    client.orders.create(order_body(), idempotency_key="order-1001")
    first, second, third = keys(requests)
    assert first != second
    assert third == "order-1001"


def test_reads_carry_no_idempotency_key_and_are_retried():
    client, requests, _ = scripted(httpx.ConnectError, httpx.Response(200, json=ORDER))
    assert client.orders.get("ord_1").id == "ord_1"
    assert keys(requests) == [None, None]
    assert [r.method for r in requests] == ["GET", "GET"]
    assert requests[0].url.path == "/v1/orders/ord_1"


def test_a_conflict_other_than_key_in_use_is_not_retried():
    client, requests, _ = scripted(status(409, 6, "RESOURCE_ALREADY_EXISTS"))
    with pytest.raises(ConflictError) as caught:
        client.orders.create(order_body())
    assert caught.value.reason == "RESOURCE_ALREADY_EXISTS"
    assert len(requests) == 1


def test_a_bad_request_is_not_retried():
    client, requests, _ = scripted(status(400, 3, "FIELD_REQUIRED"))
    with pytest.raises(InvalidRequestError):
        client.orders.create(order_body())
    assert len(requests) == 1


def test_retries_stop_after_max_retries_with_the_last_error():
    client, requests, sleeps = scripted(
        *(status(503, 14, "UPSTREAM_UNAVAILABLE") for _ in range(4))
    )
    with pytest.raises(ServerError) as caught:
        client.orders.get("ord_1")
    assert caught.value.request_id == "req-1"
    assert len(requests) == 4
    assert len(sleeps) == 3


def test_connection_failures_end_in_api_connection_error():
    client, _, _ = scripted(*(httpx.ConnectError for _ in range(4)))
    with pytest.raises(APIConnectionError):
        client.orders.get("ord_1")


def test_retry_after_is_honoured():
    limited = status(429, 8, "RATE_LIMITED")
    limited.headers["retry-after"] = "2"
    client, _, sleeps = scripted(limited, httpx.Response(200, json=ORDER))
    client.orders.get("ord_1")
    assert sleeps == [2.0]


def test_a_long_retry_after_is_waited_for_up_to_a_minute():
    asked = []
    for seconds in ("30", "600"):
        limited = status(429, 8, "RATE_LIMITED")
        limited.headers["retry-after"] = seconds
        client, _, sleeps = scripted(limited, httpx.Response(200, json=ORDER))
        client.orders.get("ord_1")
        asked += sleeps
    assert asked == [30.0, 60.0]


def test_unknown_response_fields_are_ignored():
    client, _, _ = scripted(httpx.Response(200, json={**ORDER, "added_in_2030": {"x": 1}}))
    assert client.orders.get("ord_1").id == "ord_1"


def test_an_expired_access_token_is_refreshed_once_on_401_credential_expired():
    class FakeOAuth:
        def __init__(self) -> None:
            self.refreshed = 0

        def refresh(self, refresh_token: str) -> Tokens:
            self.refreshed += 1
            return Tokens("at-2", "rt-2", expires_at=9e9)

    requests: list[httpx.Request] = []
    answers: list[Callable[[], httpx.Response]] = [
        lambda: status(401, 16, "CREDENTIAL_EXPIRED"),
        lambda: httpx.Response(200, json=ORDER),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0)()

    oauth = FakeOAuth()
    saved: list[Tokens] = []
    session = OAuthSession(oauth, Tokens("at-1", "rt-1", expires_at=9e9), on_tokens=saved.append)  # type: ignore[arg-type]
    client = FlintClient(
        oauth=session,
        base_url="http://flint.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    client.orders.create(order_body())
    assert [r.headers["authorization"] for r in requests] == ["Bearer at-1", "Bearer at-2"]
    assert oauth.refreshed == 1
    assert saved == [Tokens("at-2", "rt-2", expires_at=9e9)]
    assert keys(requests)[0] == keys(requests)[1]


def test_request_bodies_use_proto_field_names_and_routes_from_the_http_rules():
    client, requests, _ = scripted(
        httpx.Response(200, json=ORDER), httpx.Response(200, json={"orders": []})
    )
    client.orders.add_note("ord_1", "hello")
    list(client.orders.list(customer_email="a@example.com", status="ORDER_STATUS_PAID"))
    note, listing = requests
    assert (note.method, note.url.path) == ("POST", "/v1/orders/ord_1:add_note")
    assert json.loads(note.content) == {"text": "hello"}
    assert listing.url.params.get("customer_email") == "a@example.com"
    assert listing.url.params.get("status") == "ORDER_STATUS_PAID"


def test_a_401_after_another_thread_refreshed_retries_with_that_token_without_refreshing_again():
    class FakeOAuth:
        def __init__(self) -> None:
            self.refreshed = 0

        def refresh(self, refresh_token: str) -> Tokens:
            self.refreshed += 1
            n = self.refreshed + 1
            return Tokens(f"at-{n}", f"rt-{n}", expires_at=9e9)

    oauth = FakeOAuth()
    session = OAuthSession(oauth, Tokens("at-1", "rt-1", expires_at=9e9))  # type: ignore[arg-type]
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            # While this request was in flight with at-1, another thread sharing
            # the session met the expiry first and refreshed to at-2.
            session.refresh()
            return status(401, 16, "CREDENTIAL_EXPIRED")
        return httpx.Response(200, json=ORDER)

    client = FlintClient(
        oauth=session,
        base_url="http://flint.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    client.orders.get("ord_1")
    assert [r.headers["authorization"] for r in requests] == ["Bearer at-1", "Bearer at-2"]
    assert oauth.refreshed == 1
