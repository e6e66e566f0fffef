"""`FlintClient`: the REST API through Envoy, with the generated protobuf
messages as the model (the same classes internal gRPC callers use)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import httpx
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from flint.sdk import resources
from flint.sdk._rest import WRITE_VERBS, http_call
from flint.sdk._transport import ApiKey, Credentials, RetryPolicy, Transport, new_idempotency_key
from flint.sdk.oauth import DEFAULT_BASE_URL, OAuthSession

R = TypeVar("R", bound=Message)
T = TypeVar("T")

__version__ = "0.1.0"
USER_AGENT = f"flint-python/{__version__} httpx/{httpx.__version__}"


class FlintClient:
    """A client of one Flint, as one credential.

    Args:
        api_key: a merchant secret key (`sk_test_…`/`sk_live_…`) or a partner key (`pak_…`).
        oauth: an app's `OAuthSession` instead; its token is refreshed as needed.
        base_url: Flint's public URL (default `$FLINT_BASE_URL`, else http://127.0.0.1:8080).
        timeout: seconds per request attempt.
        max_retries: extra attempts for a call that is safe to retry (GETs, and writes,
            which always carry an Idempotency-Key) after a 409 IDEMPOTENCY_KEY_IN_USE,
            429, 5xx or a connection failure.
        http_client: an `httpx.Client` to use (its base_url is replaced); the caller closes it.

    Resources: `orders`, `checkout_sessions`, `payment_links`, `invoices`, `refunds`,
    `payments`, `installs`, `events`, `webhook_endpoints`, `webhook_deliveries`,
    `app_charges`, `app_invoices`. Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        oauth: OAuthSession | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        if (api_key is None) == (oauth is None):
            raise ValueError("pass exactly one of api_key and oauth")
        self.base_url = (base_url or os.environ.get("FLINT_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        credentials: Credentials = ApiKey(api_key) if api_key is not None else oauth  # type: ignore[assignment]
        self.oauth = oauth
        self._owns_http = http_client is None
        if http_client is None:
            http_client = httpx.Client(timeout=timeout, follow_redirects=False)
        http_client.base_url = httpx.URL(self.base_url)
        http_client.headers["User-Agent"] = USER_AGENT
        self._transport = Transport(
            http_client, credentials, retry or RetryPolicy(max_retries=max_retries)
        )

        self.orders = resources.Orders(self)
        self.checkout_sessions = resources.CheckoutSessions(self)
        self.payment_links = resources.PaymentLinks(self)
        self.invoices = resources.Invoices(self)
        self.refunds = resources.Refunds(self)
        self.payments = resources.Payments(self)
        self.installs = resources.Installs(self)
        self.events = resources.Events(self)
        self.webhook_endpoints = resources.WebhookEndpoints(self)
        self.webhook_deliveries = resources.WebhookDeliveries(self)
        self.app_charges = resources.AppCharges(self)
        self.app_invoices = resources.AppInvoices(self)

    @property
    def transport(self) -> Transport:
        return self._transport

    def close(self) -> None:
        if self._owns_http:
            self._transport.http.close()

    def __enter__(self) -> FlintClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: MethodDescriptor,
        request: Message,
        response_type: type[R],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> R:
        """Calls any unary RPC by its descriptor, over its `google.api.http` route.

        Writes (POST/PATCH/DELETE) carry `idempotency_key`, or a fresh UUID4 that
        every retry of this call reuses. Raises a `FlintError` subclass."""
        http = http_call(method, request)
        key = None
        if http.verb in WRITE_VERBS:
            key = idempotency_key or new_idempotency_key()
        response = self._transport.request(
            http.verb,
            http.path,
            params=http.params,
            json=http.json,
            idempotency_key=key,
            timeout=timeout,
        )
        return json_format.Parse(
            response.content or b"{}", response_type(), ignore_unknown_fields=True
        )

    def paginate(
        self,
        method: MethodDescriptor,
        request: Message,
        response_type: type[R],
        items: Callable[[R], Sequence[T]],
    ) -> Iterator[T]:
        """Every item of a List RPC, fetching pages (`page_token` →
        `next_page_token`) as the iteration needs them."""
        page_request = type(request)()
        page_request.CopyFrom(request)
        while True:
            page = self.call(method, page_request, response_type)
            yield from items(page)
            token = str(getattr(page, "next_page_token", ""))
            if not token:
                return
            page_request.page_token = token  # type: ignore[attr-defined]
