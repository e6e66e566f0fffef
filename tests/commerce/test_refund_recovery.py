"""A refund reserved by a process that died before settling it is settled by
the servers' maintenance sweep: once, asking the processor again under the
refund's id, never a refund that is still in flight."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from flint.commerce import refunds
from flint.commerce.context import Actor, Tenant
from flint.commerce.models import OrderRecord, RefundRecord
from flint.commerce.processor import RefundResult, TestProcessor
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.server.app import _sweep
from tests.commerce.support import Commerce
from tests.conftest import MerchantCreds
from tests.installs.oauth_support import internal_key


class ProcessDied(BaseException):
    """The process ends between reserving the refund and settling it."""


class DyingProcessor(TestProcessor):
    def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        raise ProcessDied


class RecordingProcessor(TestProcessor):
    """The test acquirer, noting the idempotency key of every refund asked of it."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.lock = threading.Lock()

    def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        with self.lock:
            self.keys.append(idempotency_key)
        return super().refund(
            reference=reference, amount=amount, currency=currency, idempotency_key=idempotency_key
        )


def crashed_refund(database_url: str, merchant: MerchantCreds, order_id: str, at: datetime) -> str:
    """A refund reserved at `at` whose process died before the processor answered."""
    then = Database(database_url, clock=lambda: at)
    try:
        with pytest.raises(ProcessDied):
            refunds.create_refund(
                then,
                DyingProcessor(),
                Tenant(merchant.id, "test"),
                Actor("merchant", merchant.id),
                refunds.RefundRequest(order_id, 0, "", {}),
                finish=lambda uow, refund: refund,
            )
        with then.read() as session:
            refund_id = session.scalar(
                select(RefundRecord.id).where(RefundRecord.order_id == order_id)
            )
    finally:
        then.dispose()
    assert refund_id is not None
    return refund_id


@pytest.fixture
def paid_order(channel, db: Database, new_merchant: MerchantCreds) -> str:  # type: ignore[no-untyped-def]
    return Commerce(channel, new_merchant.test_key, internal_key(db)).paid_order().id


def _state(db: Database, refund_id: str) -> tuple[str, str, int, int]:
    with db.read() as session:
        refund = session.get_one(RefundRecord, refund_id)
        order = session.get_one(OrderRecord, refund.order_id)
        settled_events = session.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.object_id == refund_id, EventRecord.type == "refund.succeeded")
        )
        return refund.status, order.status, order.amount_refunded, settled_events or 0


def test_a_refund_left_pending_by_a_crash_is_settled_by_the_sweep(
    db: Database, database_url: str, new_merchant: MerchantCreds, paid_order: str
):
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    refund_id = crashed_refund(database_url, new_merchant, paid_order, ten_minutes_ago)
    assert _state(db, refund_id)[0] == "pending"
    processor = RecordingProcessor()
    assert refunds.recover_stale_refunds(db, processor).done >= 1
    status, order_status, refunded, events = _state(db, refund_id)
    assert (status, order_status, events) == ("succeeded", "refunded", 1)
    assert refunded > 0
    # The processor was asked under the refund's id, so it cannot refund twice.
    assert processor.keys == [refund_id]
    refunds.recover_stale_refunds(db, processor)
    assert processor.keys == [refund_id]  # settled: never asked again


def test_the_maintenance_sweep_recovers_refunds(
    db: Database, database_url: str, new_merchant: MerchantCreds, paid_order: str
):
    refund_id = crashed_refund(
        database_url, new_merchant, paid_order, datetime.now(UTC) - timedelta(hours=1)
    )
    done = _sweep(db, TestProcessor())
    assert done["refunds_recovered"] >= 1
    assert _state(db, refund_id)[0] == "succeeded"


def test_a_refund_still_in_flight_is_left_alone(
    db: Database, database_url: str, new_merchant: MerchantCreds, paid_order: str
):
    refund_id = crashed_refund(database_url, new_merchant, paid_order, datetime.now(UTC))
    processor = RecordingProcessor()
    refunds.recover_stale_refunds(db, processor)
    assert refund_id not in processor.keys
    assert _state(db, refund_id)[0] == "pending"


def test_sweeps_on_several_replicas_settle_a_refund_once(
    db: Database, database_url: str, new_merchant: MerchantCreds, paid_order: str
):
    refund_id = crashed_refund(
        database_url, new_merchant, paid_order, datetime.now(UTC) - timedelta(minutes=10)
    )
    processor = RecordingProcessor()
    start = threading.Barrier(3)
    settled: list[int] = []

    def sweep() -> None:
        start.wait()
        settled.append(refunds.recover_stale_refunds(db, processor).done)

    sweeps = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in sweeps:
        thread.start()
    for thread in sweeps:
        thread.join(30)
    status, _, refunded, events = _state(db, refund_id)
    assert (status, events) == ("succeeded", 1)
    with db.read() as session:
        refund = session.get_one(RefundRecord, refund_id)
    assert refunded == refund.amount  # not two or three times
    assert sum(settled) == 1
