"""Which events an app may see: those about objects its grant's scopes let it
read, and its own install's lifecycle."""

from __future__ import annotations

from collections.abc import Collection

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
