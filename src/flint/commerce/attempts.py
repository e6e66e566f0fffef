"""The payment lease. While a buyer's card is charged, the checkout session or
invoice being paid is held by that attempt (attempt_id, attempt_until): no
second payment starts, and nothing expires, voids or cancels it meanwhile. A
lease left by a crashed attempt lapses at attempt_until."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.orm import Session

from flint.commerce.context import Tenant, scoped
from flint.commerce.models import CheckoutSessionRecord, InvoiceRecord
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError

LEASE = timedelta(seconds=60)

Payable = CheckoutSessionRecord | InvoiceRecord


def held(record: Payable, now: datetime) -> bool:
    return record.attempt_until is not None and record.attempt_until > now


def in_progress(noun: str) -> FlintError:
    return FlintError(
        Code.ABORTED, "PAYMENT_IN_PROGRESS", f"A payment of this {noun} is in progress"
    )


def refuse_if_held(record: Payable, now: datetime, noun: str) -> None:
    if held(record, now):
        raise in_progress(noun)


def take(
    uow: UnitOfWork,
    record: Payable,
    attempt: str,
    *,
    noun: str,
    check_payable: Callable[[], None],
    also: Sequence[ColumnElement[bool]] = (),
) -> None:
    """Leases an open session or invoice to `attempt` with one conditional
    UPDATE, which only one of concurrent submissions can win (SQLite and
    PostgreSQL alike). A loser learns whether the object stopped being payable
    (`check_payable` raises) or another payment is running."""
    model = type(record)
    taken = uow.session.execute(
        update(model)
        .where(
            model.id == record.id,
            model.status == "open",
            or_(model.attempt_until.is_(None), model.attempt_until <= uow.now),
            *also,
        )
        .values(attempt_id=attempt, attempt_until=uow.now + LEASE)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        uow.session.refresh(record)
        check_payable()
        raise in_progress(noun)


def open_payables(session: Session, tenant: Tenant, order_id: str) -> list[Payable]:
    """An order's open checkout sessions and invoices: whatever a buyer could be paying it with."""
    payables: list[Payable] = []
    for model in (CheckoutSessionRecord, InvoiceRecord):
        payables += session.scalars(
            scoped(model, tenant).where(model.order_id == order_id, model.status == "open")
        )
    return payables


def refuse_if_order_held(
    session: Session, tenant: Tenant, order_id: str, now: datetime, *, besides: str = ""
) -> None:
    """Refuses while a payment of the order (other than of `besides`) is running.
    The caller holds the order's row lock, which every claim takes first."""
    if any(p.id != besides and held(p, now) for p in open_payables(session, tenant, order_id)):
        raise in_progress("order")


def release(record: Payable) -> None:
    record.attempt_id, record.attempt_until = "", None
