"""The published catalog of event types. `record_event` refuses any other type,
so the catalog cannot fall behind the code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventType:
    name: str
    # The object in `data.object`.
    object_type: str
    description: str


CATALOG: tuple[EventType, ...] = (
    EventType("install.created", "install", "A merchant installed the app"),
    EventType("install.updated", "install", "The install gained scopes or an environment"),
    EventType("install.grant_revoked", "install", "The merchant revoked one environment's grant"),
    EventType("install.uninstalled", "install", "The app was uninstalled; nothing more follows"),
    EventType("order.created", "order", "An order was created"),
    EventType("order.updated", "order", "An order's email or metadata changed"),
    EventType("order.note_added", "order", "A note was added to an order"),
    EventType("order.paid", "order", "An order was paid"),
    EventType("order.partially_refunded", "order", "Part of a paid order was refunded"),
    EventType("order.refunded", "order", "A paid order was refunded in full"),
    EventType("order.fulfilled", "order", "An order was fulfilled"),
    EventType("order.canceled", "order", "An unpaid order was canceled"),
    EventType("checkout.session.created", "checkout.session", "A checkout session was created"),
    EventType("checkout.session.completed", "checkout.session", "A checkout session was paid"),
    EventType("checkout.session.expired", "checkout.session", "A checkout session expired"),
    EventType("payment.succeeded", "payment", "A card payment succeeded"),
    EventType("payment.failed", "payment", "A card payment was declined"),
    EventType("payment_link.created", "payment_link", "A payment link was created"),
    EventType("payment_link.updated", "payment_link", "A payment link changed (e.g. deactivated)"),
    EventType("invoice.created", "invoice", "A draft invoice was created"),
    EventType("invoice.updated", "invoice", "A draft invoice was edited"),
    EventType("invoice.finalized", "invoice", "An invoice was finalized, numbered and opened"),
    EventType("invoice.paid", "invoice", "An invoice was paid"),
    EventType("invoice.voided", "invoice", "An open invoice was voided"),
    EventType(
        "invoice.marked_uncollectible", "invoice", "An open invoice was marked uncollectible"
    ),
    EventType("refund.created", "refund", "A refund was requested"),
    EventType("refund.succeeded", "refund", "A refund succeeded"),
    EventType("refund.failed", "refund", "A refund failed; the amount is refundable again"),
    EventType("webhook_endpoint.test", "webhook_endpoint", "A test event sent with :test"),
    EventType(
        "webhook_endpoint.disabled",
        "webhook_endpoint",
        "An endpoint was disabled after failing continuously",
    ),
)

BY_NAME = {event.name: event for event in CATALOG}

# App billing: recorded with the charging app as the only app audience.
CATALOG += (
    EventType("app_charge.created", "app_charge", "An app created a charge awaiting confirmation"),
    EventType("app_charge.activated", "app_charge", "The merchant approved an app charge"),
    EventType("app_charge.declined", "app_charge", "The merchant declined an app charge"),
    EventType("app_charge.expired", "app_charge", "An app charge was not confirmed in 2 days"),
    EventType(
        "app_charge.frozen",
        "app_charge",
        "An app charge froze: grant revoked, app uninstalled or payment failed for good",
    ),
    EventType("app_charge.canceled", "app_charge", "The app or the merchant canceled a charge"),
    EventType(
        "app_charge.updated",
        "app_charge",
        "A higher usage cap was requested, approved, declined or expired on an app charge",
    ),
    EventType("app_usage.recorded", "app_usage_record", "An app reported usage on its charge"),
    EventType("app_invoice.paid", "app_invoice", "The merchant paid an app invoice"),
    EventType("app_invoice.payment_failed", "app_invoice", "A payment of an app invoice failed"),
)
BY_NAME = {event.name: event for event in CATALOG}
