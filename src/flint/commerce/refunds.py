"""Refunds of paid orders. The order's refundable amount is reserved in the
database with a conditional UPDATE (and guarded by a CHECK constraint), so no
interleaving of concurrent requests can refund more than was paid — on SQLite
and PostgreSQL alike. The processor is called with no transaction open."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flint.commerce import orders, presenter, timeline
from flint.commerce.context import (
    SYSTEM,
    Actor,
    Tenant,
    list_order_parts,
    load_scoped,
    scoped,
)
from flint.commerce.events import emit
from flint.commerce.models import OrderRecord, PaymentRecord, RefundRecord
from flint.commerce.processor import Processor, RefundResult
from flint.common.db import Database, UnitOfWork
from flint.common.errors import Code, FlintError, Violations
from flint.common.ids import new_id
from flint.common.jobs import Item, JobResult, run_job
from flint.common.money import MAX_AMOUNT, display
from flint.common.validation import check_metadata

T = TypeVar("T")
REASONS = ("", "duplicate", "fraudulent", "requested_by_customer")
# A refund pending this long after it was reserved lost the process settling it:
# far longer than a processor call may take.
STALE_PENDING_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class RefundRequest:
    order_id: str
    # 0: everything still refundable.
    amount: int
    reason: str
    metadata: dict[str, str]


def _emit_refund(uow: UnitOfWork, tenant: Tenant, refund: RefundRecord, type_: str) -> None:
    emit(
        uow,
        tenant,
        type_,
        object_type="refund",
        object_id=refund.id,
        version=refund.version,
        message=presenter.refund_pb(refund),
    )


def create_refund(
    db: Database,
    processor: Processor,
    tenant: Tenant,
    actor: Actor,
    request: RefundRequest,
    finish: Callable[[UnitOfWork, RefundRecord], T],
) -> T:
    """Reserves, refunds at the processor, settles. `finish` ends the settling
    transaction (it commits, and may store the response with it)."""
    violations = Violations()
    if not request.order_id:
        violations.add("refund.order_id", "FIELD_REQUIRED", "is required")
    if request.amount < 0:
        violations.add("refund.amount", "AMOUNT_NOT_POSITIVE", "must be positive (0 = all)")
    elif request.amount > MAX_AMOUNT:
        violations.add("refund.amount", "AMOUNT_TOO_LARGE", "is larger than the largest amount")
    if request.reason not in REASONS:
        violations.add("refund.reason", "UNKNOWN_ENUM_VALUE", "is not a refund reason")
    check_metadata(violations, "refund.metadata", request.metadata)
    violations.raise_if_any()

    with db.unit_of_work() as uow:
        refund, payment = _reserve(uow, tenant, actor, request)
        uow.commit()
    result = processor.refund(
        reference=payment.processor_reference,
        amount=refund.amount,
        currency=refund.currency,
        idempotency_key=refund.id,
    )
    with db.unit_of_work() as uow:
        settled, _ = _settle(uow, tenant, actor, refund.id, result)
        return finish(uow, settled)


RECOVERY_JOB = "refund_recovery"


def recover_stale_refunds(
    db: Database, processor: Processor, *, now: datetime | None = None, limit: int = 100
) -> JobResult:
    """Settles refunds left pending by a process that died between reserving and
    settling (they would stay pending, their amount reserved, forever). The
    processor is asked again under the refund's id, so a refund it already made
    is reported, not made twice; settling twice is refused under the order's lock.
    Each refund is settled on its own: one that fails is noted and retried later,
    and the others are still settled. `done` counts the refunds settled."""
    at = now or db.clock()

    def stale(waiting: frozenset[str]) -> list[Item]:
        query = select(RefundRecord.id, RefundRecord.merchant_id, RefundRecord.environment).where(
            RefundRecord.status == "pending",
            RefundRecord.updated_at <= at - STALE_PENDING_AFTER,
        )
        if waiting:
            query = query.where(RefundRecord.id.not_in(waiting))
        with db.read() as session:
            rows = session.execute(query.order_by(RefundRecord.updated_at).limit(limit))
            return [Item(*row) for row in rows]

    def settle(item: Item) -> int:
        tenant = Tenant(item.merchant_id, item.environment)
        with db.read() as session:
            found = session.execute(
                select(RefundRecord, PaymentRecord.processor_reference)
                .join(PaymentRecord, PaymentRecord.id == RefundRecord.payment_id)
                .where(
                    RefundRecord.merchant_id == tenant.merchant_id,
                    RefundRecord.environment == tenant.environment,
                    RefundRecord.id == item.id,
                    RefundRecord.status == "pending",
                )
            ).first()
        if found is None:  # settled meanwhile
            return 0
        refund, reference = found
        result = processor.refund(
            reference=reference,
            amount=refund.amount,
            currency=refund.currency,
            idempotency_key=refund.id,
        )
        with db.unit_of_work() as uow:
            _, changed = _settle(uow, tenant, SYSTEM, refund.id, result)
            uow.commit()
        return int(changed)

    return run_job(db, RECOVERY_JOB, at, stale, settle)


def _reserve(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, request: RefundRequest
) -> tuple[RefundRecord, PaymentRecord]:
    order = orders.load_order(uow.session, tenant, request.order_id, lock=True)
    # A fully refunded order falls through to "nothing left to refund".
    if order.status not in ("paid", "partially_refunded", "refunded"):
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "ORDER_NOT_REFUNDABLE",
            f"Only paid orders can be refunded; this one is {order.status}",
            metadata={"status": order.status},
        )
    payment = uow.session.scalar(
        scoped(PaymentRecord, tenant).where(
            PaymentRecord.order_id == order.id, PaymentRecord.status == "succeeded"
        )
    )
    if payment is None:
        raise FlintError(Code.FAILED_PRECONDITION, "ORDER_NOT_REFUNDABLE", "No payment to refund")
    refundable = order.amount_paid - order.amount_refund_reserved
    amount = request.amount or refundable
    reserved = uow.session.execute(
        update(OrderRecord)
        .where(
            OrderRecord.id == order.id,
            OrderRecord.amount_paid - OrderRecord.amount_refund_reserved >= amount,
        )
        .values(amount_refund_reserved=OrderRecord.amount_refund_reserved + amount)
    )
    if amount <= 0 or reserved.rowcount != 1:  # type: ignore[attr-defined]
        raise FlintError(
            Code.INVALID_ARGUMENT,
            "AMOUNT_EXCEEDS_REFUNDABLE",
            f"The order has {display(max(refundable, 0), order.currency)} left to refund",
            metadata={"field": "refund.amount", "refundable": str(max(refundable, 0))},
        ).with_violation("refund.amount", "is more than the refundable amount")
    uow.session.refresh(order)
    refund = RefundRecord(
        id=new_id("re"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        order_id=order.id,
        payment_id=payment.id,
        amount=amount,
        currency=order.currency,
        reason=request.reason,
        status="pending",
        failure_reason="",
        metadata_=dict(request.metadata),
        actor_kind=actor.kind,
        actor_id=actor.id,
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
    )
    uow.session.add(refund)
    orders.touch(order, uow.now)
    reason = f" ({request.reason})" if request.reason else ""
    timeline.add_entry(
        uow,
        tenant,
        order.id,
        "refund_requested",
        actor,
        f"Refund of {display(amount, order.currency)} requested{reason}",
        object_id=refund.id,
        details={"amount": str(amount), "reason": request.reason},
    )
    _emit_refund(uow, tenant, refund, "refund.created")
    return refund, payment


def _settle(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, refund_id: str, result: RefundResult
) -> tuple[RefundRecord, bool]:
    """Records the processor's answer; False if the refund was already settled."""
    refund = load_refund(uow.session, tenant, refund_id)
    order = orders.load_order(uow.session, tenant, refund.order_id, lock=True)
    # Under the order's lock: the request and the recovery sweep (or two sweeps)
    # may both get here; the first settles, the others find it done.
    uow.session.refresh(refund)
    if refund.status != "pending":
        return refund, False
    shown = display(refund.amount, refund.currency)
    refund.version += 1
    refund.updated_at = uow.now
    if result.succeeded:
        refund.status = "succeeded"
        order.amount_refunded += refund.amount
        order.status = (
            "refunded" if order.amount_refunded >= order.amount_paid else "partially_refunded"
        )
        uow.session.execute(
            update(PaymentRecord)
            .where(PaymentRecord.id == refund.payment_id)
            .values(amount_refunded=PaymentRecord.amount_refunded + refund.amount)
        )
        timeline.add_entry(
            uow,
            tenant,
            order.id,
            "refund_succeeded",
            actor,
            f"Refunded {shown}",
            object_id=refund.id,
            details={"amount": str(refund.amount)},
        )
        _emit_refund(uow, tenant, refund, "refund.succeeded")
        orders.touch(order, uow.now)
        orders.emit_order(uow, tenant, order, f"order.{order.status}")
    else:
        refund.status = "failed"
        refund.failure_reason = result.failure_reason
        # Give the reserved amount back.
        order.amount_refund_reserved -= refund.amount
        orders.touch(order, uow.now)
        timeline.add_entry(
            uow,
            tenant,
            order.id,
            "refund_failed",
            actor,
            f"Refund of {shown} failed: {result.failure_reason}",
            object_id=refund.id,
            details={"amount": str(refund.amount)},
        )
        _emit_refund(uow, tenant, refund, "refund.failed")
    return refund, True


def load_refund(session: Session, tenant: Tenant, refund_id: str) -> RefundRecord:
    return load_scoped(session, RefundRecord, tenant, refund_id, resource="refund")


def list_refunds(
    session: Session, tenant: Tenant, *, page_size: int, page_token: str, order_id: str
) -> tuple[list[RefundRecord], str]:
    return list_order_parts(
        session,
        RefundRecord,
        tenant,
        list_name="refunds",
        page_size=page_size,
        page_token=page_token,
        order_id=order_id,
    )


def load_payment(session: Session, tenant: Tenant, payment_id: str) -> PaymentRecord:
    return load_scoped(session, PaymentRecord, tenant, payment_id, resource="payment")


def list_payments(
    session: Session, tenant: Tenant, *, page_size: int, page_token: str, order_id: str
) -> tuple[list[PaymentRecord], str]:
    return list_order_parts(
        session,
        PaymentRecord,
        tenant,
        list_name="payments",
        page_size=page_size,
        page_token=page_token,
        order_id=order_id,
    )
