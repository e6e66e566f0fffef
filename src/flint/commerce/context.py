"""Who a commerce call acts for (the tenant) and who did it (the actor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from flint.apps.models import AppRecord
from flint.common.auth import Principal, PrincipalKind
from flint.common.errors import Code, FlintError, not_found


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


def actor_of(session: Session, principal: Principal) -> Actor:
    if principal.kind is PrincipalKind.APP:
        name = session.scalar(select(AppRecord.name).where(AppRecord.id == principal.app_id))
        return Actor("app", principal.app_id, name or "")
    return Actor("merchant", principal.merchant, "")


class TenantRow(Protocol):
    """A commerce table: every row belongs to one merchant and environment."""

    id: Any
    merchant_id: Any
    environment: Any


R = TypeVar("R", bound=TenantRow)


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
