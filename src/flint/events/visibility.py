"""Which events an app may see: those about objects its grant's scopes let it
read, and its own install's lifecycle."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class EventLike(Protocol):
    type: str
    object_type: str
    app_id: str


# The scope that lets an app read each kind of object.
READ_SCOPES: dict[str, str] = {
    "order": "orders:read",
    "checkout.session": "orders:read",
    "payment": "orders:read",
    "refund": "refunds:read",
    "invoice": "invoices:read",
    "payment_link": "payment_links:read",
}
# Install lifecycle events always reach the install's own app.
ALWAYS_VISIBLE = frozenset({"install"})


def may_see(scopes: Collection[str], event_type: str, object_type: str) -> bool:
    del event_type  # visibility follows the object, whatever happened to it
    if object_type in ALWAYS_VISIBLE:
        return True
    scope = READ_SCOPES.get(object_type)
    return scope is not None and scope in scopes


def visible_object_types(scopes: Collection[str]) -> list[str]:
    """The object types (besides the app's own install) an app may see."""
    return sorted(t for t, scope in READ_SCOPES.items() if scope in scopes)


def app_may_see(app_id: str, scopes: Collection[str], event: EventLike) -> bool:
    """Whether an install of `app_id` with `scopes` may see `event` (which must
    already be of the install's merchant and environment)."""
    if event.app_id and event.app_id != app_id:
        return False
    return may_see(scopes, event.type, event.object_type)


# App billing objects: only the charging app sees them (events carry its app_id).
READ_SCOPES.update(
    {
        "app_charge": "billing:write",
        "app_usage_record": "billing:write",
        "app_invoice": "billing:write",
    }
)
