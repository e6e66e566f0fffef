"""Orders: create, read, update, cancel, fulfil, notes, and the workflow record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, select
from sqlalchemy.orm import Session

from flint.commerce import attempts, presenter, timeline
from flint.commerce.context import Actor, Tenant, load_scoped, scoped
from flint.commerce.events import emit
from flint.commerce.lines import (
    LineInput,
    check_money_inputs,
    stored_lines,
    total_of,
)
from flint.commerce.models import (
    CheckoutSessionRecord,
    InvoiceRecord,
    OrderNoteRecord,
    OrderRecord,
    PaymentRecord,
    RefundRecord,
)
from flint.common.db import UnitOfWork, insert_now
from flint.common.errors import Code, FlintError, Violations, invalid_argument, not_found
from flint.common.ids import new_id
from flint.common.money import display, normalize_currency
from flint.common.pagination import fetch_page, parse_page
from flint.common.validation import check_email, check_metadata, update_paths

MAX_LINE_ITEMS = 100
MAX_NOTE_LENGTH = 2000
STATUSES = ("open", "paid", "partially_refunded", "refunded", "canceled")


def emit_order(uow: UnitOfWork, tenant: Tenant, order: OrderRecord, type_: str) -> None:
    emit(
        uow,
        tenant,
        type_,
        object_type="order",
        object_id=order.id,
        version=order.version,
        message=presenter.order_pb(order),
    )


def touch(order: OrderRecord, now: datetime) -> None:
    order.version += 1
    order.updated_at = now


def new_order(
    uow: UnitOfWork,
    tenant: Tenant,
    actor: Actor,
    *,
    lines: Sequence[LineInput],
    currency: str,
    customer_email: str,
    metadata: dict[str, str],
) -> OrderRecord:
    """Inserts a validated order with its event and first timeline entry."""
    items = stored_lines(lines)
    total = total_of(items)
    order = OrderRecord(
        id=new_id("ord"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        status="open",
        fulfillment_status="unfulfilled",
        currency=normalize_currency(currency),
        line_items=items,
        subtotal=total,
        total=total,
        amount_paid=0,
        amount_refunded=0,
        amount_refund_reserved=0,
        customer_email=customer_email.strip(),
        metadata_=dict(metadata),
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
        canceled_at=None,
        fulfilled_at=None,
    )
    insert_now(uow.session, order)
    timeline.add_entry(
        uow,
        tenant,
        order.id,
        "created",
        actor,
        f"Order created for {display(total, order.currency)}",
        details={"total": str(total), "currency": order.currency},
    )
    emit_order(uow, tenant, order, "order.created")
    return order


def create_order(
    uow: UnitOfWork,
    tenant: Tenant,
    actor: Actor,
    *,
    lines: Sequence[LineInput],
    currency: str,
    customer_email: str,
    metadata: dict[str, str],
) -> OrderRecord:
    violations = Violations()
    check_money_inputs(violations, "order", lines, currency, max_items=MAX_LINE_ITEMS)
    check_email(violations, "order.customer_email", customer_email.strip())
    check_metadata(violations, "order.metadata", metadata)
    violations.raise_if_any()
    return new_order(
        uow,
        tenant,
        actor,
        lines=lines,
        currency=currency,
        customer_email=customer_email,
        metadata=metadata,
    )


def load_order(
    session: Session, tenant: Tenant, order_id: str, *, lock: bool = False
) -> OrderRecord:
    return load_scoped(session, OrderRecord, tenant, order_id, resource="order", lock=lock)


@dataclass
class OrderRecordView:
    """The order with everything that happened to it."""

    order: OrderRecord
    notes: list[OrderNoteRecord] = field(default_factory=list)
    sessions: list[CheckoutSessionRecord] = field(default_factory=list)
    payments: list[PaymentRecord] = field(default_factory=list)
    invoices: list[InvoiceRecord] = field(default_factory=list)
    refunds: list[RefundRecord] = field(default_factory=list)


def _related(session: Session, tenant: Tenant, model: Any, order_id: str) -> list[Any]:
    query = scoped(model, tenant).where(model.order_id == order_id).order_by(model.id)
    return list(session.scalars(query))


# OrderRecordView's lists and the tables they come from.
_PARTS: dict[str, Any] = {
    "notes": OrderNoteRecord,
    "sessions": CheckoutSessionRecord,
    "payments": PaymentRecord,
    "invoices": InvoiceRecord,
    "refunds": RefundRecord,
}


def _of_tenant_order(model: Any, id_column: Any) -> list[ColumnElement[bool]]:
    return [
        model.merchant_id == bindparam("merchant_id"),
        model.environment == bindparam("environment"),
        id_column == bindparam("order_id"),
    ]


# The order and, for each kind of part, whether it has any: one round trip.
# Built once, as composing a statement costs more CPU than running it; the
# tenant is a parameter of every table it reads, as in `scoped`.
_ORDER_WITH_PARTS = select(
    OrderRecord,
    *(exists().where(*_of_tenant_order(model, model.order_id)) for model in _PARTS.values()),
).where(*_of_tenant_order(OrderRecord, OrderRecord.id))


def get_order(session: Session, tenant: Tenant, order_id: str) -> OrderRecordView:
    row = session.execute(
        _ORDER_WITH_PARTS,
        {
            "merchant_id": tenant.merchant_id,
            "environment": tenant.environment,
            "order_id": order_id,
        },
    ).one_or_none()
    if row is None:
        raise not_found("order", order_id)
    order, *present = row
    # Only the kinds of parts the order has are loaded (a new order has none,
    # most orders one or two).
    parts = {
        name: _related(session, tenant, model, order_id) if has else []
        for (name, model), has in zip(_PARTS.items(), present, strict=True)
    }
    return OrderRecordView(order=order, **parts)


@dataclass(frozen=True)
class OrderFilter:
    customer_email: str = ""
    status: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_orders(
    session: Session, tenant: Tenant, *, page_size: int, page_token: str, where: OrderFilter
) -> tuple[list[OrderRecord], str]:
    if where.status and where.status not in STATUSES:
        raise invalid_argument("status", "UNKNOWN_ENUM_VALUE", "is not an order status")
    query = scoped(OrderRecord, tenant)
    if where.customer_email:
        query = query.where(OrderRecord.customer_email == where.customer_email.strip())
    if where.status:
        query = query.where(OrderRecord.status == where.status)
    if where.created_after:
        query = query.where(OrderRecord.created_at >= where.created_after)
    if where.created_before:
        query = query.where(OrderRecord.created_at < where.created_before)
    context = (
        f"orders:{tenant.merchant_id}:{tenant.environment}:{where.customer_email}:"
        f"{where.status}:{where.created_after}:{where.created_before}"
    )
    page = parse_page(session, page_size, page_token, context=context)
    return fetch_page(session, query, OrderRecord.id, page)


UPDATABLE = ("customer_email", "metadata")


def update_order(
    uow: UnitOfWork,
    tenant: Tenant,
    actor: Actor,
    order_id: str,
    *,
    customer_email: str,
    metadata: dict[str, str],
    mask: Sequence[str],
) -> OrderRecord:
    paths = update_paths(
        mask, UPDATABLE, "order", {"customer_email": customer_email, "metadata": metadata}
    )
    violations = Violations()
    if "customer_email" in paths:
        check_email(violations, "order.customer_email", customer_email.strip())
    if "metadata" in paths:
        check_metadata(violations, "order.metadata", metadata)
    violations.raise_if_any()
    order = load_order(uow.session, tenant, order_id, lock=True)
    if "customer_email" in paths:
        order.customer_email = customer_email.strip()
    if "metadata" in paths:
        order.metadata_ = dict(metadata)
    touch(order, uow.now)
    timeline.add_entry(
        uow, tenant, order.id, "updated", actor, f"Updated {', '.join(sorted(paths))}"
    )
    emit_order(uow, tenant, order, "order.updated")
    return order


def cancel_order(uow: UnitOfWork, tenant: Tenant, actor: Actor, order_id: str) -> OrderRecord:
    order = load_order(uow.session, tenant, order_id, lock=True)
    if order.status != "open":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "ORDER_NOT_CANCELABLE",
            f"Only unpaid orders can be canceled; this one is {order.status}",
            metadata={"status": order.status},
        )
    from flint.commerce import checkout  # noqa: PLC0415 - checkout imports orders

    payables = attempts.open_payables(uow.session, tenant, order.id)
    if any(attempts.held(p, uow.now) for p in payables):
        raise attempts.in_progress("order")
    for payable in payables:
        if isinstance(payable, CheckoutSessionRecord):
            checkout.mark_expired(uow, tenant, payable, actor)
    order.status = "canceled"
    order.canceled_at = uow.now
    touch(order, uow.now)
    timeline.add_entry(uow, tenant, order.id, "canceled", actor, "Order canceled")
    emit_order(uow, tenant, order, "order.canceled")
    return order


def fulfill_order(uow: UnitOfWork, tenant: Tenant, actor: Actor, order_id: str) -> OrderRecord:
    order = load_order(uow.session, tenant, order_id, lock=True)
    if order.status not in ("paid", "partially_refunded"):
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "ORDER_NOT_PAID",
            f"Only paid orders can be fulfilled; this one is {order.status}",
            metadata={"status": order.status},
        )
    if order.fulfillment_status == "fulfilled":
        raise FlintError(
            Code.FAILED_PRECONDITION, "ORDER_ALREADY_FULFILLED", "The order is already fulfilled"
        )
    order.fulfillment_status = "fulfilled"
    order.fulfilled_at = uow.now
    touch(order, uow.now)
    timeline.add_entry(uow, tenant, order.id, "fulfilled", actor, "Order fulfilled")
    emit_order(uow, tenant, order, "order.fulfilled")
    return order


def add_note(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, order_id: str, text: str
) -> OrderRecordView:
    if not text.strip():
        raise invalid_argument("text", "FIELD_REQUIRED", "is required")
    if len(text) > MAX_NOTE_LENGTH:
        raise invalid_argument(
            "text", "FIELD_TOO_LONG", f"must be at most {MAX_NOTE_LENGTH} characters"
        )
    order = load_order(uow.session, tenant, order_id, lock=True)
    uow.session.add(
        OrderNoteRecord(
            merchant_id=tenant.merchant_id,
            environment=tenant.environment,
            order_id=order.id,
            text=text.strip(),
            actor_kind=actor.kind,
            actor_id=actor.id,
            actor_name=actor.name,
            created_at=uow.now,
        )
    )
    touch(order, uow.now)
    by = f" by {actor.name}" if actor.kind == "app" else ""
    timeline.add_entry(
        uow, tenant, order.id, "note_added", actor, f"Note added{by}: {text.strip()[:200]}"
    )
    emit_order(uow, tenant, order, "order.note_added")
    uow.session.flush()
    return get_order(uow.session, tenant, order.id)


def get_timeline(session: Session, tenant: Tenant, order_id: str) -> list:  # type: ignore[type-arg]
    load_order(session, tenant, order_id)
    return timeline.entries(session, tenant, order_id)
