"""Issue 13: app charge amounts, caps and usage records stay under the amount
ceiling; invoices the billing run computes are split to stay under it; revenue
reports refuse sums past int64 instead of crashing."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
import pytest
from sqlalchemy import select, update

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.billing import cycles
from flint.billing.models import AppInvoiceRecord
from flint.billing.v1 import billing_service_pb2 as pb
from flint.billing.vault import TestVault
from flint.commerce.processor import TestProcessor
from flint.common.db import Database
from tests.billing.support import BillingWorld, billing_world
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.errors import grpc_error

VAULT = TestVault(TestProcessor())
USD_CEILING = 99_999_999
INT64_MAX = 2**63 - 1


@pytest.fixture
def bw(channel: grpc.Channel, db: Database, new_partner: PartnerCreds, new_merchant: MerchantCreds):
    return billing_world(channel, db, new_partner, new_merchant)


def _refused(call: object) -> tuple[str, str, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    details = grpc_error(caught.value)
    return details.code, details.reason, details.fields


def _usage_charge(bw: BillingWorld, cap: int = 1000) -> pb.AppCharge:
    charge = bw.create(kind=pb.APP_CHARGE_KIND_USAGE, name="SMS", amount=0, capped_amount=cap)
    return bw.decide(charge.id).app_charge


@pytest.mark.parametrize("amount", [USD_CEILING + 1, INT64_MAX], ids=["one-over", "int64-max"])
def test_a_charge_amount_over_the_ceiling_is_refused(bw: BillingWorld, amount: int):
    assert _refused(lambda: bw.create(amount=amount)) == (
        "INVALID_ARGUMENT",
        "AMOUNT_TOO_LARGE",
        ["app_charge.amount"],
    )


def test_a_usage_cap_over_the_ceiling_is_refused(bw: BillingWorld):
    call = lambda: bw.create(  # noqa: E731
        kind=pb.APP_CHARGE_KIND_USAGE, name="SMS", amount=0, capped_amount=USD_CEILING + 1
    )
    assert _refused(call)[1:] == ("AMOUNT_TOO_LARGE", ["app_charge.capped_amount"])


def test_a_zero_decimal_charge_may_use_eight_digits(bw: BillingWorld):
    assert bw.create(amount=USD_CEILING, currency="jpy").amount == USD_CEILING


def test_raising_a_cap_over_the_ceiling_is_refused(bw: BillingWorld):
    charge = _usage_charge(bw)
    request = pb.IncreaseAppChargeCapRequest(id=charge.id, capped_amount=USD_CEILING + 1)
    assert _refused(lambda: bw.stub.IncreaseAppChargeCap(request, metadata=bw.auth)) == (
        "INVALID_ARGUMENT",
        "AMOUNT_TOO_LARGE",
        ["capped_amount"],
    )


def test_a_usage_record_over_the_ceiling_is_refused(bw: BillingWorld):
    charge = _usage_charge(bw)
    request = pb.CreateUsageRecordRequest(
        app_charge_id=charge.id,
        usage_record=pb.UsageRecord(description="x", amount=INT64_MAX, idempotency_key="big"),
    )
    assert _refused(lambda: bw.stub.CreateUsageRecord(request, metadata=bw.auth)) == (
        "INVALID_ARGUMENT",
        "AMOUNT_TOO_LARGE",
        ["usage_record.amount"],
    )


def _invoice_totals(db: Database, app_id: str) -> list[int]:
    with db.read() as session:
        return sorted(
            session.scalars(select(AppInvoiceRecord.total).where(AppInvoiceRecord.app_id == app_id))
        )


def test_charges_whose_sum_passes_the_ceiling_are_invoiced_apart(bw: BillingWorld, db: Database):
    # Each charge is at the ceiling; one invoice of both would pass it.
    views = [bw.decide(bw.create(amount=USD_CEILING).id) for _ in range(2)]
    last = max(v.app_charge.activate_time.ToDatetime(tzinfo=UTC) for v in views)
    result = cycles.run_cycles(db, VAULT, last + timedelta(seconds=1))
    assert result.errors == 0
    assert _invoice_totals(db, bw.app.id) == [USD_CEILING, USD_CEILING]


def test_revenue_past_int64_is_refused_not_crashed_on(
    bw: BillingWorld, db: Database, new_partner: PartnerCreds
):
    # Rows from before the ceiling: two paid invoices at int64's largest.
    for _ in range(2):
        view = bw.decide(bw.create(amount=5000).id)
        activated = view.app_charge.activate_time.ToDatetime(tzinfo=UTC)
        cycles.run_cycles(db, VAULT, activated + timedelta(seconds=1))
    assert len(_invoice_totals(db, bw.app.id)) == 2
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(AppInvoiceRecord)
            .where(AppInvoiceRecord.app_id == bw.app.id)
            .values(total=INT64_MAX, amount_paid=INT64_MAX)
        )
        uow.commit()
    request = pb.GetAppRevenueRequest(app_id=bw.app.id, environment=accounts_pb.ENVIRONMENT_TEST)
    call = lambda: bw.stub.GetAppRevenue(request, metadata=bearer(new_partner.key))  # noqa: E731
    assert _refused(call)[:2] == ("FAILED_PRECONDITION", "AMOUNT_OVERFLOW")
