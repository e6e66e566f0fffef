"""Issue 13: a poisoned row never stops upkeep. For each upkeep job, one tenant
has a row the job cannot process (written straight into the database, as a bug
or an old release could have left it) and two tenants are healthy: every sweep
still does the healthy tenants' work, and the poisoned item is reported in
job_failures with its tenant, retried with backoff, then set aside."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import select, update

from flint.billing import cycles
from flint.billing.models import AppChargeRecord, AppInvoiceRecord
from flint.billing.vault import TestVault
from flint.commerce import checkout, refunds
from flint.commerce.models import CheckoutSessionRecord, RefundRecord
from flint.commerce.processor import TestProcessor
from flint.common import jobs
from flint.common.db import Database
from flint.common.jobs import JobFailureRecord
from flint.server.app import _sweep
from tests.billing.support import BillingWorld, billing_world
from tests.commerce.support import Commerce
from tests.commerce.test_refund_recovery import crashed_refund
from tests.conftest import MerchantCreds, create_merchant, create_partner
from tests.installs.oauth_support import internal_key

INT64_MAX = 2**63 - 1


@pytest.fixture
def merchants(accounts_stub, admin_key: str) -> list[MerchantCreds]:  # type: ignore[no-untyped-def]
    """The poisoned tenant first, then two healthy ones."""
    return [create_merchant(accounts_stub, admin_key, f"Shop {n}") for n in range(3)]


def _failure(db: Database, job: str, item_id: str) -> JobFailureRecord | None:
    with db.read() as session:
        return session.get(JobFailureRecord, (job, item_id))


def _until_set_aside(
    db: Database, job: str, item_id: str, sweep: object, start: datetime
) -> JobFailureRecord:
    """Runs `sweep(now)` at each retry time of the item until it is set aside."""
    now = start
    for _ in range(jobs.MAX_ATTEMPTS):
        noted = _failure(db, job, item_id)
        assert noted is not None
        if noted.status == jobs.SET_ASIDE:
            return noted
        assert noted.next_attempt_at is not None
        now = noted.next_attempt_at
        sweep(now)  # type: ignore[operator]
    noted = _failure(db, job, item_id)
    assert noted is not None
    return noted


# --- checkout expiry -----------------------------------------------------------------


@pytest.fixture
def open_sessions(
    channel: grpc.Channel, db: Database, merchants: list[MerchantCreds]
) -> Iterator[list[str]]:
    """An open session past its time for each tenant; the first one's row is
    corrupt (an environment the API never writes), so expiring it raises."""
    ids = []
    for merchant in merchants:
        shop = Commerce(channel, merchant.test_key, internal_key(db))
        ids.append(shop.create_session(shop.create_order().id).id)
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(CheckoutSessionRecord)
            .where(CheckoutSessionRecord.id.in_(ids))
            .values(expires_at=uow.now - timedelta(seconds=1))
        )
        uow.session.execute(
            update(CheckoutSessionRecord)
            .where(CheckoutSessionRecord.id == ids[0])
            .values(environment="Test")
        )
        uow.commit()
    yield ids
    with db.unit_of_work() as uow:  # leave no poison for the tests that follow
        uow.session.execute(
            update(CheckoutSessionRecord)
            .where(CheckoutSessionRecord.id == ids[0])
            .values(environment="test", status="expired")
        )
        uow.commit()


def _session_status(db: Database, session_id: str) -> str:
    with db.read() as session:
        return session.get_one(CheckoutSessionRecord, session_id).status


def test_a_poisoned_checkout_session_does_not_keep_other_tenants_sessions_open(
    db: Database, merchants: list[MerchantCreds], open_sessions: list[str]
):
    poisoned, *healthy = open_sessions
    done = _sweep(db, TestProcessor())
    assert [_session_status(db, i) for i in healthy] == ["expired", "expired"]
    assert _session_status(db, poisoned) == "open"
    assert done["checkout_sessions_expired"] >= 2
    assert done["job_items_failed"] >= 1
    noted = _failure(db, checkout.EXPIRY_JOB, poisoned)
    assert noted is not None
    assert (noted.status, noted.attempts, noted.merchant_id) == ("retrying", 1, merchants[0].id)
    assert "KeyError" in noted.error
    set_aside = _until_set_aside(
        db,
        checkout.EXPIRY_JOB,
        poisoned,
        lambda now: checkout.expire_due_sessions(db, now),
        datetime.now(UTC),
    )
    assert (set_aside.status, set_aside.attempts) == ("set_aside", jobs.MAX_ATTEMPTS)


# --- stale-refund recovery -----------------------------------------------------------


@pytest.fixture
def stale_refunds(
    channel: grpc.Channel, db: Database, database_url: str, merchants: list[MerchantCreds]
) -> Iterator[list[str]]:
    """A refund left pending by a crash for each tenant; the first one's order
    row is gone (a dangling reference), so settling it raises."""
    ids = []
    for merchant in merchants:
        order = Commerce(channel, merchant.test_key, internal_key(db)).paid_order()
        ids.append(
            crashed_refund(
                database_url, merchant, order.id, datetime.now(UTC) - timedelta(minutes=10)
            )
        )
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(RefundRecord).where(RefundRecord.id == ids[0]).values(order_id="ord_gone")
        )
        uow.commit()
    yield ids
    with db.unit_of_work() as uow:  # leave nothing pending for the tests that follow
        uow.session.execute(
            update(RefundRecord).where(RefundRecord.id == ids[0]).values(status="failed")
        )
        uow.commit()


def _refund_status(db: Database, refund_id: str) -> str:
    with db.read() as session:
        return session.get_one(RefundRecord, refund_id).status


def test_a_poisoned_refund_does_not_stop_other_tenants_refunds_settling(
    db: Database, merchants: list[MerchantCreds], stale_refunds: list[str]
):
    poisoned, *healthy = stale_refunds
    done = _sweep(db, TestProcessor())
    assert [_refund_status(db, i) for i in healthy] == ["succeeded", "succeeded"]
    assert _refund_status(db, poisoned) == "pending"
    assert done["refunds_recovered"] == 2
    assert done["job_items_failed"] >= 1
    noted = _failure(db, refunds.RECOVERY_JOB, poisoned)
    assert noted is not None
    assert (noted.status, noted.merchant_id, noted.environment) == (
        "retrying",
        merchants[0].id,
        "test",
    )
    set_aside = _until_set_aside(
        db,
        refunds.RECOVERY_JOB,
        poisoned,
        lambda now: refunds.recover_stale_refunds(db, TestProcessor(), now=now),
        datetime.now(UTC),
    )
    assert set_aside.status == "set_aside"
    # Set aside: the operator sees it, and the sweep leaves it alone.
    assert poisoned in {f.item_id for f in jobs.list_failures(db, status=jobs.SET_ASIDE)}
    assert refunds.recover_stale_refunds(db, TestProcessor()).failed == 0


# --- app billing ---------------------------------------------------------------------


@pytest.fixture
def billing_tenants(
    channel: grpc.Channel, db: Database, accounts_stub, admin_key: str, merchants
) -> Iterator[list[tuple[BillingWorld, str]]]:  # type: ignore[no-untyped-def]
    """An approved one-time charge for each tenant (two for the first, whose
    amounts are int64's largest: the reproduction in issue 13, where their sum
    made the whole billing run fail); with the activation time."""
    partner = create_partner(accounts_stub, admin_key)
    tenants = []
    for index, merchant in enumerate(merchants):
        bw = billing_world(channel, db, partner, merchant)
        for _ in range(2 if index == 0 else 1):
            view = bw.decide(bw.create(amount=5000).id)
        tenants.append((bw, view.app_charge.activate_time.ToDatetime(tzinfo=UTC)))
    poisoned = tenants[0][0]
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(AppChargeRecord)
            .where(AppChargeRecord.app_id == poisoned.app.id)
            .values(amount=INT64_MAX)
        )
        uow.commit()
    yield tenants
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(AppChargeRecord)
            .where(AppChargeRecord.app_id == poisoned.app.id)
            .values(status="canceled", period_end=None)
        )
        uow.commit()


def _invoice_totals(db: Database, app_id: str) -> list[int]:
    with db.read() as session:
        return list(
            session.scalars(select(AppInvoiceRecord.total).where(AppInvoiceRecord.app_id == app_id))
        )


def test_charges_summing_past_int64_do_not_stop_other_tenants_billing(
    db: Database, merchants: list[MerchantCreds], billing_tenants
):  # type: ignore[no-untyped-def]
    (poisoned, _), *healthy = billing_tenants
    at = max(activated for _, activated in billing_tenants) + timedelta(seconds=1)
    done = _sweep(db, TestProcessor(), now=at)
    assert [_invoice_totals(db, bw.app.id) for bw, _ in healthy] == [[5000], [5000]]
    assert _invoice_totals(db, poisoned.app.id) == []
    assert done["app_invoices_created"] >= 2
    assert done["app_billing_errors"] >= 1
    group = f"{merchants[0].id}/test/{poisoned.app.id}/usd"
    noted = _failure(db, cycles.BILLING_INVOICE_JOB, group)
    assert noted is not None
    assert (noted.status, noted.merchant_id) == ("retrying", merchants[0].id)
    assert "AMOUNT_TOO_LARGE" in noted.error or "over the ceiling" in noted.error
    vault = TestVault(TestProcessor())
    set_aside = _until_set_aside(
        db,
        cycles.BILLING_INVOICE_JOB,
        group,
        lambda now: cycles.run_cycles(db, vault, now),
        at,
    )
    assert set_aside.status == "set_aside"
    assert _invoice_totals(db, poisoned.app.id) == []
