"""The published scope catalog: the only scopes an app may request or be granted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScopeInfo:
    name: str
    description: str


CATALOG: tuple[ScopeInfo, ...] = (
    ScopeInfo("orders:read", "See your orders, their payments and timelines"),
    ScopeInfo("orders:write", "Create, update, cancel and fulfil orders and add notes"),
    ScopeInfo("checkout:write", "Create hosted checkout sessions for your buyers"),
    ScopeInfo("payment_links:read", "See your payment links"),
    ScopeInfo("payment_links:write", "Create and change payment links"),
    ScopeInfo("invoices:read", "See your invoices"),
    ScopeInfo("invoices:write", "Create, finalize and void invoices"),
    ScopeInfo("refunds:read", "See refunds"),
    ScopeInfo("refunds:write", "Refund payments on your orders"),
    ScopeInfo("events:read", "Receive events about the objects it may see"),
    ScopeInfo("billing:write", "Charge you for the app itself, after you confirm each charge"),
)

NAMES = frozenset(s.name for s in CATALOG)
