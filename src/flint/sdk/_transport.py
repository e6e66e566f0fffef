"""One HTTP request to Flint with everything around it: credentials, the
Idempotency-Key, safe retries with backoff, and error mapping."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from flint.sdk.errors import APIConnectionError, FlintError, error_from_response

IDEMPOTENCY_HEADER = "Idempotency-Key"


class Credentials(Protocol):
    """What the transport needs from a credential."""

    def authorization(self) -> str:
        """The `Authorization` header value for the next request."""
        ...

    def recover(self, error: FlintError) -> bool:
        """Called once on a 401; True when a retry may now succeed (token refreshed)."""
        ...


class ApiKey:
    """A merchant secret key (`sk_test_…`), partner key (`pak_…`) or any bearer credential."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("api_key is empty")
        self._key = key

    def authorization(self) -> str:
        return f"Bearer {self._key}"

    def recover(self, error: FlintError) -> bool:
        return False

    @property
    def is_secret_key(self) -> bool:
        """A merchant's secret key (`sk_test_…`/`sk_live_…`), not an app's token."""
        return self._key.startswith("sk_")

    def __repr__(self) -> str:
        return f"ApiKey({self._key[:8]}…)"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits a random time in
    [0, min(max_delay, initial_delay * 2**n)] — or, when the answer says, what
    `Retry-After` asks, up to `max_retry_after` (retrying sooner than asked would
    only be refused again)."""

    max_retries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.initial_delay * (2**attempt))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


def retryable_status(error: FlintError) -> bool:
    """Answers that another attempt of the same request may succeed."""
    if error.status == 409:
        return error.reason == "IDEMPOTENCY_KEY_IN_USE"
    return error.status == 429 or error.status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


class Transport:
    """Sends requests to one Flint, retrying only what is safe to retry: reads,
    and writes that carry an Idempotency-Key (every write does, unless the caller
    turns it off). The same key is sent on every attempt of one call."""

    def __init__(
        self,
        http: httpx.Client,
        credentials: Credentials | None,
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = http
        self.credentials = credentials
        self.retry = retry
        self.sleep = sleep

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.authorization()
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        return headers

    def request(
        self,
        verb: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json: Any = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Sends one call (with its retries) and returns the 2xx response, or
        raises the `FlintError` of the last attempt."""
        safe = verb == "GET" or bool(idempotency_key)
        recovered = False
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    verb,
                    path,
                    params=list(params),
                    json=json,
                    headers=self._headers(idempotency_key),
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as error:
                # A refused connection never reached the server: any request may go again.
                if (safe or isinstance(error, httpx.ConnectError)) and (
                    attempt < self.retry.max_retries
                ):
                    self.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise APIConnectionError(
                    f"{verb} {path} failed: {type(error).__name__}: {error}"
                ) from error
            if response.is_success:
                return response
            failure = error_from_response(response)
            if failure.status == 401 and not recovered and self.credentials is not None:
                recovered = True
                if self.credentials.recover(failure):
                    continue
            if safe and retryable_status(failure) and attempt < self.retry.max_retries:
                self.sleep(self.retry.delay(attempt, _retry_after(response)))
                attempt += 1
                continue
            raise failure

    @contextmanager
    def stream(
        self,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        timeout: httpx.Timeout,
    ) -> Iterator[httpx.Response]:
        """Opens a streaming GET; raises the `FlintError` of a non-2xx answer
        (after one credential refresh on a 401)."""
        recovered = False
        while True:
            with self.http.stream(
                "GET",
                path,
                params=list(params),
                headers={**self._headers(None), "Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.is_success:
                    yield response
                    return
                response.read()
                failure = error_from_response(response)
            if failure.status == 401 and not recovered and self.credentials is not None:
                recovered = True
                if self.credentials.recover(failure):
                    continue
            raise failure


def new_idempotency_key() -> str:
    """A fresh random key (UUID4) for one logical write."""
    return str(uuid.uuid4())
