"""Checkout sessions: hosted collection of one order's payment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.commerce import attempts, orders, presenter, timeline
from flint.commerce.context import SYSTEM, Actor, Tenant, list_order_parts, load_scoped, scoped
from flint.commerce.events import emit
from flint.commerce.lines import LineInput, check_money_inputs
from flint.commerce.models import CheckoutSessionRecord, OrderRecord
from flint.common.db import Database, UnitOfWork
from flint.common.errors import Code, FlintError, Violations
from flint.common.ids import new_id
from flint.common.jobs import Item, JobResult, run_job
from flint.common.money import display
from flint.common.validation import check_email, check_url

DEFAULT_LIFETIME = timedelta(hours=24)
MIN_LIFETIME = timedelta(minutes=30)
MAX_LIFETIME = timedelta(hours=24)


def emit_session(
    uow: UnitOfWork, tenant: Tenant, session: CheckoutSessionRecord, type_: str
) -> None:
    emit(
        uow,
        tenant,
        type_,
        object_type="checkout.session",
        object_id=session.id,
        version=session.version,
        message=presenter.session_pb(session),
    )


def create_session(
    uow: UnitOfWork,
    tenant: Tenant,
    actor: Actor,
    *,
    order_id: str,
    lines: Sequence[LineInput],
    currency: str,
    success_url: str,
    cancel_url: str,
    expires_at: datetime | None,
    customer_email: str,
    payment_link_id: str = "",
) -> tuple[CheckoutSessionRecord, OrderRecord]:
    violations = Violations()
    check_url(violations, "checkout_session.success_url", success_url, required=True)
    check_url(violations, "checkout_session.cancel_url", cancel_url)
    check_email(violations, "checkout_session.customer_email", customer_email.strip())
    if order_id and (lines or currency):
        violations.add(
            "checkout_session.line_items",
            "CONFLICTING_FIELDS",
            "give either order_id or line_items and currency, not both",
        )
    elif not order_id:
        check_money_inputs(
            violations, "checkout_session", lines, currency, max_items=orders.MAX_LINE_ITEMS
        )
    if expires_at is not None and not (
        uow.now + MIN_LIFETIME - timedelta(seconds=5)
        <= expires_at
        <= uow.now + MAX_LIFETIME + timedelta(seconds=5)
    ):
        violations.add(
            "checkout_session.expires_at",
            "OUT_OF_RANGE",
            "must be between 30 minutes and 24 hours from now",
        )
    violations.raise_if_any()
    if order_id:
        order = orders.load_order(uow.session, tenant, order_id, lock=True)
        if order.status != "open":
            raise FlintError(
                Code.FAILED_PRECONDITION,
                "ORDER_NOT_PAYABLE",
                f"The order is {order.status}; only open orders can be paid",
                metadata={"status": order.status},
            )
    else:
        order = orders.new_order(
            uow,
            tenant,
            actor,
            lines=lines,
            currency=currency,
            customer_email=customer_email,
            metadata={},
        )
    session = CheckoutSessionRecord(
        id=new_id("cs"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        order_id=order.id,
        payment_link_id=payment_link_id,
        status="open",
        success_url=success_url,
        cancel_url=cancel_url,
        customer_email=customer_email.strip() or order.customer_email,
        expires_at=expires_at or uow.now + DEFAULT_LIFETIME,
        payment_id="",
        attempt_id="",
        attempt_until=None,
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
    )
    uow.session.add(session)
    timeline.add_entry(
        uow,
        tenant,
        order.id,
        "checkout_started",
        actor,
        f"Checkout started for {display(order.total, order.currency)}",
        object_id=session.id,
    )
    emit_session(uow, tenant, session, "checkout.session.created")
    return session, order


def load_session(
    session: Session, tenant: Tenant, session_id: str, *, lock: bool = False
) -> CheckoutSessionRecord:
    return load_scoped(
        session, CheckoutSessionRecord, tenant, session_id, resource="checkout_session", lock=lock
    )


def get_session(
    session: Session, tenant: Tenant, session_id: str
) -> tuple[CheckoutSessionRecord, OrderRecord]:
    record = load_session(session, tenant, session_id)
    return record, orders.load_order(session, tenant, record.order_id)


def list_sessions(
    session: Session, tenant: Tenant, *, page_size: int, page_token: str, order_id: str
) -> tuple[list[CheckoutSessionRecord], str]:
    return list_order_parts(
        session,
        CheckoutSessionRecord,
        tenant,
        list_name="sessions",
        page_size=page_size,
        page_token=page_token,
        order_id=order_id,
    )


def open_sessions_of(
    session: Session, tenant: Tenant, order_id: str
) -> list[CheckoutSessionRecord]:
    return list(
        session.scalars(
            scoped(CheckoutSessionRecord, tenant).where(
                CheckoutSessionRecord.order_id == order_id,
                CheckoutSessionRecord.status == "open",
            )
        )
    )


def mark_expired(
    uow: UnitOfWork, tenant: Tenant, session: CheckoutSessionRecord, actor: Actor
) -> None:
    session.status = "expired"
    session.version += 1
    session.updated_at = uow.now
    timeline.add_entry(
        uow,
        tenant,
        session.order_id,
        "checkout_expired",
        actor,
        "Checkout expired",
        object_id=session.id,
    )
    emit_session(uow, tenant, session, "checkout.session.expired")


def expire_session(
    uow: UnitOfWork, tenant: Tenant, actor: Actor, session_id: str
) -> tuple[CheckoutSessionRecord, OrderRecord]:
    record = load_session(uow.session, tenant, session_id, lock=True)
    if record.status != "open":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "CHECKOUT_SESSION_NOT_OPEN",
            f"The session is {record.status}",
            metadata={"status": record.status},
        )
    attempts.refuse_if_held(record, uow.now, "session")
    mark_expired(uow, tenant, record, actor)
    return record, orders.load_order(uow.session, tenant, record.order_id)


EXPIRY_JOB = "checkout_expiry"


def expire_due_sessions(db: Database, now: datetime | None = None, limit: int = 500) -> JobResult:
    """The expiry sweep: open sessions past expires_at become expired, each in
    its own transaction (a session that cannot be expired is noted and retried,
    and never keeps the others open)."""
    at = now or db.clock()

    def due(waiting: frozenset[str]) -> list[Item]:
        query = select(
            CheckoutSessionRecord.id,
            CheckoutSessionRecord.merchant_id,
            CheckoutSessionRecord.environment,
        ).where(CheckoutSessionRecord.status == "open", CheckoutSessionRecord.expires_at <= at)
        if waiting:
            query = query.where(CheckoutSessionRecord.id.not_in(waiting))
        with db.read() as session:
            return [Item(*row) for row in session.execute(query.limit(limit))]

    def expire(item: Item) -> int:
        tenant = Tenant(item.merchant_id, item.environment)
        with db.unit_of_work() as uow:
            uow.now = at
            record = uow.session.scalar(
                scoped(CheckoutSessionRecord, tenant)
                .where(
                    CheckoutSessionRecord.id == item.id,
                    CheckoutSessionRecord.status == "open",
                    CheckoutSessionRecord.expires_at <= uow.now,
                )
                .with_for_update(skip_locked=True)
            )
            # Gone, paid meanwhile, held by another sweep or by a payment attempt.
            if record is None or attempts.held(record, uow.now):
                return 0
            mark_expired(uow, tenant, record, SYSTEM)
            uow.commit()
        return 1

    return run_job(db, EXPIRY_JOB, at, due, expire)


def check_payable(record: CheckoutSessionRecord, now: datetime) -> None:
    if record.status == "complete":
        raise FlintError(
            Code.FAILED_PRECONDITION, "CHECKOUT_SESSION_COMPLETE", "The session is already paid"
        )
    if record.status == "expired" or record.expires_at <= now:
        raise FlintError(
            Code.FAILED_PRECONDITION, "CHECKOUT_SESSION_EXPIRED", "The session has expired"
        )
