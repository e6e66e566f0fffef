"""The delivery record: deliveries and their attempts, per endpoint, per app and
per event, scoped to the partner; kept for at least RETENTION."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from flint.apps import service as apps
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import UnitOfWork
from flint.common.errors import invalid_argument, not_found
from flint.common.pagination import fetch_page, next_page_token, parse_page
from flint.webhooks.models import (
    WebhookAttemptRecord,
    WebhookDeliveryRecord,
    WebhookPayloadRecord,
)
from flint.webhooks.service import visible_endpoint

# Finished deliveries, their attempts and payloads are kept this long.
RETENTION = timedelta(days=35)


def _owned(principal: Principal) -> list[object]:
    if principal.kind is PrincipalKind.ADMIN:
        return []
    if principal.kind is PrincipalKind.PARTNER:
        return [WebhookDeliveryRecord.partner_id == principal.id]
    return [WebhookDeliveryRecord.id.is_(None)]


def get_delivery(session: Session, principal: Principal, delivery_id: str) -> WebhookDeliveryRecord:
    query = select(WebhookDeliveryRecord).where(
        WebhookDeliveryRecord.id == delivery_id,
        *_owned(principal),  # type: ignore[arg-type]
    )
    delivery: WebhookDeliveryRecord | None = session.scalar(query)
    if delivery is None:
        raise not_found("webhook delivery", delivery_id)
    return delivery


def list_deliveries(
    session: Session,
    principal: Principal,
    *,
    endpoint_id: str,
    app_id: str,
    event_id: str,
    status: str,
    page_size: int,
    page_token: str,
) -> tuple[list[WebhookDeliveryRecord], str]:
    query = select(WebhookDeliveryRecord).where(*_owned(principal))  # type: ignore[arg-type]
    if endpoint_id:
        visible_endpoint(session, principal, endpoint_id)
        query = query.where(WebhookDeliveryRecord.endpoint_id == endpoint_id)
    elif app_id:
        apps.get_app(session, principal, app_id)
        query = query.where(WebhookDeliveryRecord.app_id == app_id)
    else:
        raise invalid_argument("endpoint_id", "FIELD_REQUIRED", "give endpoint_id or app_id")
    if event_id:
        query = query.where(WebhookDeliveryRecord.event_id == event_id)
    if status:
        query = query.where(WebhookDeliveryRecord.status == status)
    context = f"webhook_deliveries:{principal.id}:{endpoint_id}:{app_id}:{event_id}:{status}"
    page = parse_page(session, page_size, page_token, context=context)
    return fetch_page(session, query, WebhookDeliveryRecord.id, page)


def list_attempts(
    session: Session,
    principal: Principal,
    *,
    delivery_id: str,
    endpoint_id: str,
    event_id: str,
    page_size: int,
    page_token: str,
) -> tuple[list[WebhookAttemptRecord], str]:
    """Newest first, by start time (then delivery and number, so a page
    boundary is exact)."""
    query = select(WebhookAttemptRecord)
    if delivery_id:
        get_delivery(session, principal, delivery_id)
        query = query.where(WebhookAttemptRecord.delivery_id == delivery_id)
    elif endpoint_id:
        visible_endpoint(session, principal, endpoint_id)
        query = query.where(WebhookAttemptRecord.endpoint_id == endpoint_id)
        if event_id:
            query = query.where(WebhookAttemptRecord.event_id == event_id)
    else:
        raise invalid_argument("delivery_id", "FIELD_REQUIRED", "give delivery_id or endpoint_id")
    context = f"webhook_attempts:{principal.id}:{delivery_id}:{endpoint_id}:{event_id}"
    page = parse_page(session, page_size, page_token, context=context)
    key = tuple_(
        WebhookAttemptRecord.started_at,
        WebhookAttemptRecord.delivery_id,
        WebhookAttemptRecord.number,
    )
    if page.after is not None:
        started, delivery, number = page.after.split("|")
        query = query.where(key < tuple_(datetime.fromisoformat(started), delivery, int(number)))
    rows = list(
        session.scalars(
            query.order_by(
                WebhookAttemptRecord.started_at.desc(),
                WebhookAttemptRecord.delivery_id.desc(),
                WebhookAttemptRecord.number.desc(),
            ).limit(page.size + 1)
        )
    )
    if len(rows) <= page.size:
        return rows, ""
    rows = rows[: page.size]
    last = rows[-1]
    position = f"{last.started_at.isoformat()}|{last.delivery_id}|{last.number}"
    return rows, next_page_token(session, page, position)


def purge_expired(uow: UnitOfWork, now: datetime, keep: timedelta = RETENTION) -> int:
    """Forgets deliveries finished before `now - keep`, with their attempts and
    the payloads no delivery needs any more. Returns how many deliveries."""
    cutoff = now - keep
    session = uow.session
    old = select(WebhookDeliveryRecord.id).where(
        WebhookDeliveryRecord.completed_at < cutoff,
        WebhookDeliveryRecord.status != "pending",
    )
    ids = list(session.scalars(old.limit(5000)))
    if not ids:
        return 0
    session.execute(delete(WebhookAttemptRecord).where(WebhookAttemptRecord.delivery_id.in_(ids)))
    session.execute(delete(WebhookDeliveryRecord).where(WebhookDeliveryRecord.id.in_(ids)))
    still_used = select(WebhookDeliveryRecord.event_id).where(
        WebhookDeliveryRecord.event_id == WebhookPayloadRecord.event_id,
        WebhookDeliveryRecord.install_id == WebhookPayloadRecord.install_id,
    )
    session.execute(
        delete(WebhookPayloadRecord).where(
            WebhookPayloadRecord.created_at < cutoff, ~still_used.exists()
        )
    )
    return len(ids)
