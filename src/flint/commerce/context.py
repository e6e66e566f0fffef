"""Who a commerce call acts for (the tenant) and who did it (the actor)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from flint.common.auth import Principal, PrincipalKind
from flint.common.errors import Code, FlintError, not_found
from flint.common.pagination import fetch_page, parse_page


@dataclass(frozen=True)
class Tenant:
    """Every commerce query is scoped by this pair, at the lowest layer."""

    merchant_id: str
    environment: str


@dataclass(frozen=True)
class Actor:
    kind: str  # merchant, app, buyer, system
    id: str = ""
    name: str = ""


BUYER = Actor("buyer")
SYSTEM = Actor("system", "", "Flint")


def tenant_of(principal: Principal) -> Tenant:
    if principal.kind not in (PrincipalKind.MERCHANT, PrincipalKind.APP) or not (
        principal.environment
    ):
        raise FlintError(
            Code.PERMISSION_DENIED,
            "PRINCIPAL_NOT_ALLOWED",
            "Commerce objects need a merchant secret key or an app token",
        )
    return Tenant(principal.merchant, principal.environment)


def actor_of(principal: Principal) -> Actor:
    if principal.kind is PrincipalKind.APP:
        return Actor("app", principal.app_id, principal.app_name)
    return Actor("merchant", principal.merchant, "")


class TenantRow(Protocol):
    """A commerce table: every row belongs to one merchant and environment."""

    id: Any
    merchant_id: Any
    environment: Any


class OrderPartRow(TenantRow, Protocol):
    """A row that belongs to one order (a session, payment, refund, ...)."""

    order_id: Any


R = TypeVar("R", bound=TenantRow)
P = TypeVar("P", bound=OrderPartRow)


def scoped(model: type[R], tenant: Tenant) -> Select[R]:
    """The one way commerce code selects rows: already limited to the tenant, so a
    forgotten filter cannot leak another merchant's or environment's objects."""
    return select(model).where(
        model.merchant_id == tenant.merchant_id, model.environment == tenant.environment
    )


def load_scoped(
    session: Session,
    model: type[R],
    tenant: Tenant,
    object_id: str,
    *,
    resource: str,
    lock: bool = False,
) -> R:
    query = scoped(model, tenant).where(model.id == object_id)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise not_found(resource, object_id)
    return row


def list_scoped(
    session: Session,
    model: type[R],
    tenant: Tenant,
    *,
    list_name: str,
    page_size: int,
    page_token: str,
    filters: Sequence[tuple[InstrumentedAttribute[str], str]] = (),
) -> tuple[list[R], str]:
    """One page of the tenant's `model` rows, newest first. Each (column, value)
    filter keeps rows whose column equals the value; an empty value filters
    nothing. The page token is bound to the list, the tenant and every filter."""
    query = scoped(model, tenant)
    for column, value in filters:
        if value:
            query = query.where(column == value)
    context = ":".join([list_name, tenant.merchant_id, tenant.environment])
    context += "".join(f":{value}" for _, value in filters)
    page = parse_page(session, page_size, page_token, context=context)
    return fetch_page(session, query, model.id, page)


def list_order_parts(
    session: Session,
    model: type[P],
    tenant: Tenant,
    *,
    list_name: str,
    page_size: int,
    page_token: str,
    order_id: str,
) -> tuple[list[P], str]:
    """`list_scoped` for the rows of orders (sessions, payments, refunds): all of
    them, or one order's when `order_id` is given."""
    return list_scoped(
        session,
        model,
        tenant,
        list_name=list_name,
        page_size=page_size,
        page_token=page_token,
        filters=[(model.order_id, order_id)],
    )
