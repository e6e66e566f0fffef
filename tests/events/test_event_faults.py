"""Faults the event spine survives: a rolled-back change leaves no event and no
delivery. (A stream that loses its server or database resumes from its cursor
with no gap and no duplicate: tests/faults/test_database_restart.py, on a
PostgreSQL cluster of its own.)"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from flint.commerce import orders
from flint.commerce.context import Actor, Tenant
from flint.commerce.lines import LineInput
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.events.sequencer import sequence_pending
from flint.webhooks.fanout import fan_out
from flint.webhooks.models import WebhookDeliveryRecord


def _order_then_fail(db: Database, merchant_id: str, written: list[str]) -> None:
    with db.unit_of_work() as uow:
        order = orders.create_order(
            uow,
            Tenant(merchant_id, "test"),
            Actor("merchant", merchant_id),
            lines=[LineInput("Mug", 1, 1000)],
            currency="usd",
            customer_email="",
            metadata={},
        )
        uow.session.flush()  # the event row exists inside the transaction…
        written += uow.session.scalars(
            select(EventRecord.id).where(EventRecord.object_id == order.id)
        ).all()
        raise RuntimeError("the change fails before commit")


def test_a_rolled_back_change_leaves_no_event_and_no_delivery(db: Database, new_merchant):
    written: list[str] = []
    with pytest.raises(RuntimeError):
        _order_then_fail(db, new_merchant.id, written)
    assert len(written) == 1
    sequence_pending(db, [fan_out])
    with db.read() as session:
        # …and is gone with it: nothing to number, nothing to deliver.
        assert session.get(EventRecord, written[0]) is None
        deliveries = session.scalar(
            select(func.count())
            .select_from(WebhookDeliveryRecord)
            .where(WebhookDeliveryRecord.event_id == written[0])
        )
    assert deliveries == 0
