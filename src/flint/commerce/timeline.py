"""The order workflow record: semantic entries written by the same transaction
as the change they describe."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from flint.commerce.context import Actor, Tenant, scoped
from flint.commerce.models import TimelineRecord
from flint.common.db import UnitOfWork

_INSERT = insert(cast(Table, TimelineRecord.__table__))


def add_entry(
    uow: UnitOfWork,
    tenant: Tenant,
    order_id: str,
    kind: str,
    actor: Actor,
    summary: str,
    *,
    object_id: str = "",
    details: dict[str, str] | None = None,
) -> None:
    # A Core insert, at once: an entry is written once and never changed, so the
    # ORM's unit-of-work bookkeeping (and fetching the new id back) is pure cost.
    uow.session.connection().execute(
        _INSERT,
        {
            "merchant_id": tenant.merchant_id,
            "environment": tenant.environment,
            "order_id": order_id,
            "kind": kind,
            "actor_kind": actor.kind,
            "actor_id": actor.id,
            "actor_name": actor.name,
            "object_id": object_id,
            "summary": summary,
            "details": details or {},
            "created_at": uow.now,
        },
    )


def entries(session: Session, tenant: Tenant, order_id: str) -> list[TimelineRecord]:
    query = scoped(TimelineRecord, tenant).where(TimelineRecord.order_id == order_id)
    return list(session.scalars(query.order_by(TimelineRecord.id)))
