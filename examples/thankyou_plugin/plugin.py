"""What the Thank You Notes plugin does, apart from its web pages: install
through OAuth, own a webhook endpoint, handle each event once and in version
order, thank the buyer on `order.paid`, refund on a support request, and
re-sync from the event list after downtime. Everything goes through `flint.sdk`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from flint.accounts.v1.accounts_service_pb2 import Environment
from flint.commerce.v1.resources_pb2 import Refund
from flint.events.v1.events_service_pb2 import Event
from flint.sdk import (
    AuthenticationError,
    FlintClient,
    OAuthClient,
    OAuthError,
    OAuthSession,
    Tokens,
)

from .store import Install, Order, Store

logger = logging.getLogger("thankyou_plugin")

# What the plugin asks the merchant for: read orders and their events, add
# notes, refund; checkout:write only for the "create a test checkout" button.
SCOPES = "orders:read orders:write checkout:write refunds:write events:read"
ENVIRONMENT = "test"
WEBHOOK_EVENTS = ["order.*", "install.uninstalled"]


class InstallError(Exception):
    """The OAuth callback cannot finish the install (bad or stale state, denial)."""


class UnknownOrderError(LookupError):
    """The plugin has not seen this order (or has no install for its merchant)."""


class UnknownInstallError(LookupError):
    """No active install has this id."""


@dataclass(frozen=True)
class Settings:
    flint_url: str  # Flint's public URL (Envoy)
    client_id: str  # the app's OAuth client, ca_…
    client_secret: str  # fcs_…
    app_id: str  # app_…, whose webhook endpoint the plugin creates…
    partner_key: str  # …with the partner key, pak_…
    public_url: str  # where browsers and Flint reach this plugin
    database: Path
    support_token: str  # guards the support actions (refund, re-sync)

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/oauth/callback"

    @classmethod
    def from_env(cls, port: int) -> Settings:
        def need(name: str) -> str:
            value = os.environ.get(name, "")
            if not value:
                raise SystemExit(f"thankyou_plugin: set {name}")
            return value

        return cls(
            flint_url=os.environ.get("FLINT_BASE_URL", "http://127.0.0.1:8080").rstrip("/"),
            client_id=need("FLINT_CLIENT_ID"),
            client_secret=need("FLINT_CLIENT_SECRET"),
            app_id=need("FLINT_APP_ID"),
            partner_key=need("FLINT_PARTNER_KEY"),
            public_url=os.environ.get("PLUGIN_URL", f"http://127.0.0.1:{port}").rstrip("/"),
            database=Path(os.environ.get("PLUGIN_DATABASE", "thankyou.db")),
            support_token=need("PLUGIN_SUPPORT_TOKEN"),
        )


class ThankYouPlugin:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.database)
        self.oauth = OAuthClient(
            settings.client_id,
            settings.client_secret,
            base_url=settings.flint_url,
            redirect_uri=settings.redirect_uri,
        )
        self.partner = FlintClient(api_key=settings.partner_key, base_url=settings.flint_url)
        # One client (one OAuthSession) per install: refresh tokens rotate, so
        # two sessions refreshing the same install would revoke each other.
        self._clients: dict[str, FlintClient] = {}
        self._clients_lock = threading.Lock()
        # One event at a time: the duplicate and version checks and the write
        # that follows them must not interleave with another delivery's.
        self._events_lock = threading.Lock()
        self._resync_lock = threading.Lock()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.partner.close()
        self.oauth.close()

    def client_for(self, install: Install) -> FlintClient:
        with self._clients_lock:
            client = self._clients.get(install.install_id)
            if client is None:
                session = OAuthSession(self.oauth, install.tokens, on_tokens=self.store.save_tokens)
                client = FlintClient(oauth=session, base_url=self.settings.flint_url)
                self._clients[install.install_id] = client
            return client

    def _forget_client(self, install_id: str) -> None:
        with self._clients_lock:
            client = self._clients.pop(install_id, None)
        if client is not None:
            client.close()

    # --- installing --------------------------------------------------------------

    def start_install(self) -> tuple[str, str]:
        """The URL of Flint's consent page and the `state` to bind to the browser."""
        url, state, code_verifier = self.oauth.authorization_url(SCOPES, environment=ENVIRONMENT)
        self.store.save_state(state, code_verifier)
        return url, state

    def finish_install(self, code: str, state: str) -> Tokens:
        code_verifier = self.store.pop_state(state)
        if code_verifier is None:
            raise InstallError("This install link has expired; start again.")
        tokens = self.oauth.exchange_code(code, code_verifier)
        self._forget_client(tokens.install_id)  # a re-approval brings new tokens
        self.store.save_install(tokens)
        install = self._install_of(tokens.merchant_id)
        if not install.cursor:
            # Events from before the install are history, not work: the first
            # re-sync starts at the grant.
            grant_time = _grant_time(self.client_for(install), tokens)
            self.store.save_since(install.install_id, grant_time)
        self.ensure_webhook_endpoint()
        self.resync([self._install_of(tokens.merchant_id)])  # what came before the endpoint
        logger.info("installed %s on %s", tokens.install_id, tokens.merchant_id)
        return tokens

    def ensure_webhook_endpoint(self) -> None:
        """The app owns its endpoints: the first install creates one pointing here
        and keeps its signing secret (shown only in this response)."""
        if self.store.webhook_endpoint(self.settings.app_id) is not None:
            return
        endpoint = self.partner.webhook_endpoints.create(
            self.settings.app_id,
            {
                "url": f"{self.settings.public_url}/webhooks",
                "enabled_events": WEBHOOK_EVENTS,
                "environments": ["ENVIRONMENT_TEST"],
                "description": "Thank You Notes",
            },
            # A retry after a lost response gets the same endpoint and secret back.
            idempotency_key=f"thankyou-endpoint-{self.settings.app_id}",
        )
        self.store.save_webhook_endpoint(self.settings.app_id, endpoint.id, endpoint.secret)

    def webhook_secret(self) -> str | None:
        endpoint = self.store.webhook_endpoint(self.settings.app_id)
        return None if endpoint is None else endpoint[1]

    # --- events ------------------------------------------------------------------

    def handle_event(self, event: Event, source: str) -> str:
        """Handles one event, from a webhook or a re-sync, at most once per id and
        never after a newer version of its object. Returns what happened:
        `handled`, `duplicate` or `stale`."""
        with self._events_lock:
            if self.store.was_handled(event.id):  # deliveries are at least once
                return "duplicate"
            outcome = "handled"
            if event.object_version < self.store.newest_version(event.object_id):
                outcome = "stale"  # events of one object can arrive out of order
                order = None
            else:
                order = self._act(event)
            self.store.record_event(
                event_id=event.id,
                type=event.type,
                object_id=event.object_id,
                version=event.object_version,
                source=source,
                outcome=outcome,
                order=order,
            )
        logger.info("%s %s %s (%s): %s", event.id, event.type, event.object_id, source, outcome)
        return outcome

    def _act(self, event: Event) -> Order | None:
        if event.type == "install.uninstalled":
            self.store.deactivate_install(event.object_id)
            self._forget_client(event.object_id)
            return None
        if event.object_type != "order":
            return None
        order = _order_from(event)
        install = self.store.install_for(order.merchant_id, ENVIRONMENT)
        if event.type == "order.paid" and order.customer_email and install is not None:
            # Send the thank-you email here. The key makes a repeat after a crash
            # (before the event was recorded) add the note only once.
            self.client_for(install).orders.add_note(
                order.order_id,
                f"Thanked {order.customer_email} for their order",
                idempotency_key=f"thankyou-note-{event.id}",
            )
            order = replace(order, thanked=True)
        return order

    def resync(self, installs: Iterable[Install] | None = None) -> int:
        """Pages each install's events from its last cursor and handles them like
        webhooks (duplicates are skipped): what the plugin missed while it was
        down. Returns how many events were newly handled."""
        handled = 0
        with self._resync_lock:
            for install in self.store.installs() if installs is None else installs:
                try:
                    handled += self._resync_install(install)
                except AuthenticationError as error:  # uninstalled while we were away
                    logger.warning("re-sync of %s refused: %s", install.install_id, error.reason)
                    if error.reason == "CREDENTIAL_REVOKED":
                        self.store.deactivate_install(install.install_id)
                except OAuthError as error:  # away longer than a token lives: refresh refused
                    logger.warning("re-sync of %s refused: %s", install.install_id, error.reason)
                    if error.reason == "invalid_grant":
                        self.store.deactivate_install(install.install_id)
                        self._forget_client(install.install_id)
        return handled

    def _resync_install(self, install: Install) -> int:
        client, cursor, handled = self.client_for(install), install.cursor, 0
        while True:
            window: dict[str, Any] = {} if cursor else {"created_after": _timestamp(install.since)}
            page = client.events.list_page(after=cursor, page_size=100, **window)
            for event in page.events:
                handled += self.handle_event(event, source="resync") == "handled"
            if page.next_cursor:
                cursor = page.next_cursor
                self.store.save_cursor(install.install_id, cursor)
            if not page.has_more:
                return handled

    # --- support actions ---------------------------------------------------------

    def refund(self, order_id: str, amount: int = 0) -> Refund:
        """Refunds `amount` (0: all that is refundable) of an order the plugin knows."""
        order = self.store.order(order_id)
        install = order and self.store.install_for(order.merchant_id, ENVIRONMENT)
        if not install:
            raise UnknownOrderError(order_id)
        return self.client_for(install).refunds.create(
            order_id=order_id, amount=amount, reason="REFUND_REASON_REQUESTED_BY_CUSTOMER"
        )

    def create_test_checkout(self, install_id: str) -> str:
        """A test order and its hosted checkout page (for trying the plugin out)."""
        install = next((i for i in self.store.installs() if i.install_id == install_id), None)
        if install is None:
            raise UnknownInstallError(install_id)
        client = self.client_for(install)
        order = client.orders.create(
            {
                "currency": "usd",
                "customer_email": "ann@example.com",
                "line_items": [{"name": "Thank-you mug", "quantity": 2, "unit_amount": 1200}],
            }
        )
        session = client.checkout_sessions.create(
            {
                "order_id": order.id,
                "success_url": f"{self.settings.public_url}/?paid={order.id}",
                "cancel_url": f"{self.settings.public_url}/",
            }
        )
        return session.url

    def _install_of(self, merchant_id: str) -> Install:
        install = self.store.install_for(merchant_id, ENVIRONMENT)
        if install is None:
            raise UnknownInstallError(merchant_id)
        return install


def _order_from(event: Event) -> Order:
    data = json_format.MessageToDict(event.data).get("object", {})
    return Order(
        order_id=event.object_id,
        merchant_id=event.merchant_id,
        status=str(data.get("status", "")),
        total=int(data.get("total", 0)),
        currency=str(data.get("currency", "")),
        customer_email=str(data.get("customer_email", "")),
        thanked=False,
    )


def _grant_time(client: FlintClient, tokens: Tokens) -> str:
    install = client.installs.get(tokens.install_id)
    environment = Environment.Value(f"ENVIRONMENT_{tokens.environment.upper()}")
    grant = next(g for g in install.grants if g.environment == environment)
    return grant.grant_time.ToJsonString()


def _timestamp(rfc3339: str) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromJsonString(rfc3339)
    return timestamp
