"""App billing against the real server; billing runs call the domain with an
injected `now`, so months pass in milliseconds."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
import pytest
from sqlalchemy import select

from flint.billing import charges, cycles
from flint.billing.models import AppChargeRecord, AppInvoiceRecord
from flint.billing.v1 import billing_service_pb2 as pb
from flint.billing.vault import TestVault
from flint.commerce.processor import TestProcessor
from flint.common.db import Database
from flint.common.errors import FlintError
from flint.common.events import EventRecord
from flint.installs.v1 import installs_service_pb2 as installs_pb
from tests.billing.support import RETURN_URL, BillingWorld, billing_world
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.errors import grpc_error
from tests.live_acquirer import LiveTestProcessor, LiveTestVault

VAULT = TestVault(TestProcessor())
LIVE_VAULT = LiveTestVault(LiveTestProcessor())


@pytest.fixture
def bw(channel: grpc.Channel, db: Database, new_partner: PartnerCreds, new_merchant: MerchantCreds):
    return billing_world(channel, db, new_partner, new_merchant)


def _invoices(db: Database, app_id: str) -> list[AppInvoiceRecord]:
    with db.read() as session:
        return list(
            session.scalars(
                select(AppInvoiceRecord)
                .where(AppInvoiceRecord.app_id == app_id)
                .order_by(AppInvoiceRecord.id)
            )
        )


def _refused(call: object, reason: str, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code() == code
    assert grpc_error(caught.value).reason == reason


def _period_end(charge: pb.AppCharge):  # type: ignore[no-untyped-def]
    return charge.current_period_end.ToDatetime().replace(tzinfo=UTC)


# --- lifecycle -----------------------------------------------------------------------------


def test_subscription_with_trial_is_not_invoiced_during_the_trial(bw: BillingWorld, db: Database):
    charge = bw.create(
        kind=pb.APP_CHARGE_KIND_RECURRING,
        name="Pro plan",
        amount=2900,
        interval=pb.BILLING_INTERVAL_EVERY_30_DAYS,
        trial_days=7,
    )
    assert charge.status == pb.APP_CHARGE_STATUS_PENDING
    assert charge.test
    assert charge.confirmation_url.endswith(f"/hosted/billing/charges/{charge.id}")
    view = bw.decide(charge.id)
    assert view.app_charge.status == pb.APP_CHARGE_STATUS_ACTIVE
    trial_end = _period_end(view.app_charge)
    assert (trial_end - view.app_charge.activate_time.ToDatetime(tzinfo=trial_end.tzinfo)).days == 7

    cycles.run_cycles(db, VAULT, trial_end - timedelta(seconds=1))
    cycles.run_cycles(db, VAULT, trial_end + timedelta(seconds=1))
    assert _invoices(db, bw.app.id) == []  # the trial produces no invoice

    after = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=bw.auth)
    first_paid_end = _period_end(after)
    assert first_paid_end - trial_end == timedelta(days=30)
    result = cycles.run_cycles(db, VAULT, first_paid_end + timedelta(seconds=1))
    assert result.invoiced == 1
    [invoice] = _invoices(db, bw.app.id)
    # Test environment: paid with no money moved, the processor never called.
    assert (invoice.status, invoice.total, invoice.amount_paid, invoice.processor_reference) == (
        "paid",
        2900,
        2900,
        "",
    )
    assert invoice.attempt_count == 0


def test_usage_is_recorded_capped_and_invoiced_per_period(bw: BillingWorld, db: Database):
    charge = bw.create(
        kind=pb.APP_CHARGE_KIND_USAGE, name="SMS", amount=0, capped_amount=1000, currency="usd"
    )
    bw.decide(charge.id)

    def record(amount: int, key: str) -> pb.UsageRecord:
        return bw.stub.CreateUsageRecord(
            pb.CreateUsageRecordRequest(
                app_charge_id=charge.id,
                usage_record=pb.UsageRecord(
                    description="100 SMS", amount=amount, idempotency_key=key
                ),
            ),
            metadata=bw.auth,
        )

    assert record(400, "u-1").balance_used == 400
    assert record(500, "u-2").balance_used == 900
    _refused(lambda: record(101, "u-3"), "USAGE_CAP_EXCEEDED", grpc.StatusCode.FAILED_PRECONDITION)
    assert record(100, "u-4").balance_used == 1000

    current = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=bw.auth)
    cycles.run_cycles(db, VAULT, _period_end(current) + timedelta(seconds=1))
    [invoice] = _invoices(db, bw.app.id)
    assert (invoice.total, invoice.status) == (1000, "paid")
    after = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=bw.auth)
    assert after.balance_used == 0  # a new period
    with db.read() as session:
        types = list(
            session.scalars(
                select(EventRecord.type).where(
                    EventRecord.app_id == bw.app.id, EventRecord.type == "app_usage.recorded"
                )
            )
        )
    assert len(types) == 3


def test_cap_increase_needs_the_merchants_confirmation(bw: BillingWorld):
    charge = bw.create(kind=pb.APP_CHARGE_KIND_USAGE, name="SMS", amount=0, capped_amount=1000)
    bw.decide(charge.id)
    raised = bw.stub.IncreaseAppChargeCap(
        pb.IncreaseAppChargeCapRequest(id=charge.id, capped_amount=5000), metadata=bw.auth
    )
    assert (raised.capped_amount, raised.pending_capped_amount) == (1000, 5000)
    view = bw.stub.GetAppChargeConfirmation(
        pb.GetAppChargeConfirmationRequest(id=charge.id), metadata=bw.session
    )
    assert view.cap_increase
    assert view.state == pb.CONFIRMATION_STATE_OPEN
    approved = bw.decide(charge.id)
    assert (approved.app_charge.capped_amount, approved.app_charge.pending_capped_amount) == (
        5000,
        0,
    )


def _charge_events(db: Database, charge_id: str) -> list[tuple[str, int, str | None]]:
    with db.read() as session:
        return [
            (row.type, row.object_version, row.app_id)
            for row in session.execute(
                select(EventRecord.type, EventRecord.object_version, EventRecord.app_id)
                .where(EventRecord.object_id == charge_id)
                .order_by(EventRecord.object_version)
            )
        ]


def _usage_with_raised_cap(bw: BillingWorld) -> pb.AppCharge:
    charge = bw.create(kind=pb.APP_CHARGE_KIND_USAGE, name="SMS", amount=0, capped_amount=1000)
    bw.decide(charge.id)
    return bw.stub.IncreaseAppChargeCap(
        pb.IncreaseAppChargeCapRequest(id=charge.id, capped_amount=5000), metadata=bw.auth
    )


def test_raising_a_cap_emits_one_update_with_the_new_version(bw: BillingWorld, db: Database):
    raised = _usage_with_raised_cap(bw)
    assert _charge_events(db, raised.id)[-1] == ("app_charge.updated", raised.version, bw.app.id)
    assert [e[0] for e in _charge_events(db, raised.id)].count("app_charge.updated") == 1


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "declined"])
def test_deciding_a_raised_cap_emits_one_update_with_the_new_version(
    bw: BillingWorld, db: Database, approve: bool
):
    raised = _usage_with_raised_cap(bw)
    decided = bw.decide(raised.id, approve=approve).app_charge
    assert decided.capped_amount == (5000 if approve else 1000)
    events = _charge_events(db, raised.id)
    assert events[-2:] == [
        ("app_charge.updated", raised.version, bw.app.id),
        ("app_charge.updated", decided.version, bw.app.id),
    ]
    # Every version of the charge has its event: an app following them sees no gap.
    assert [version for _, version, _ in events] == list(range(1, decided.version + 1))


def test_an_unconfirmed_raised_cap_expires_with_one_update(bw: BillingWorld, db: Database):
    raised = _usage_with_raised_cap(bw)
    expires = raised.expire_time.ToDatetime(tzinfo=UTC)
    with db.unit_of_work() as uow:
        uow.now = expires + timedelta(seconds=1)
        charges.expire_due(uow)
        uow.commit()
    got = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=raised.id), metadata=bw.auth)
    assert (got.capped_amount, got.pending_capped_amount) == (1000, 0)
    assert _charge_events(db, raised.id)[-1] == ("app_charge.updated", got.version, bw.app.id)


def test_one_time_charge_is_invoiced_once(bw: BillingWorld, db: Database):
    charge = bw.create(amount=5000)
    view = bw.decide(charge.id)
    now = view.app_charge.activate_time.ToDatetime().replace(
        tzinfo=_period_end(view.app_charge).tzinfo
    )
    cycles.run_cycles(db, VAULT, now + timedelta(seconds=1))
    cycles.run_cycles(db, VAULT, now + timedelta(days=90))
    assert [i.total for i in _invoices(db, bw.app.id)] == [5000]


def test_app_invoices_are_listed_page_by_page_per_app(
    bw: BillingWorld, db: Database, new_merchant: MerchantCreds
):
    for amount in (5000, 7000):
        view = bw.decide(bw.create(amount=amount).id)
        activated = view.app_charge.activate_time.ToDatetime(tzinfo=UTC)
        cycles.run_cycles(db, VAULT, activated + timedelta(seconds=1))
    newest = bw.stub.ListAppInvoices(pb.ListAppInvoicesRequest(page_size=1), metadata=bw.auth)
    oldest = bw.stub.ListAppInvoices(
        pb.ListAppInvoicesRequest(page_size=1, page_token=newest.next_page_token),
        metadata=bw.auth,
    )
    assert [i.total for i in (*newest.app_invoices, *oldest.app_invoices)] == [7000, 5000]
    assert oldest.next_page_token == ""
    merchant = bearer(new_merchant.test_key)
    listed = bw.stub.ListAppInvoices(pb.ListAppInvoicesRequest(), metadata=merchant)
    assert [i.app_id for i in listed.app_invoices] == [bw.app.id, bw.app.id]
    # The app's token pages the app's list only, not the merchant's whole list.
    _refused(
        lambda: bw.stub.ListAppInvoices(
            pb.ListAppInvoicesRequest(page_token=newest.next_page_token), metadata=merchant
        ),
        "INVALID_PAGE_TOKEN",
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_pending_charge_expires_after_two_days_and_cannot_be_confirmed(
    bw: BillingWorld, db: Database
):
    charge = bw.create()
    expires = charge.expire_time.ToDatetime().replace(tzinfo=_period_end_tz())
    assert cycles.run_cycles(db, VAULT, expires + timedelta(seconds=1)).expired >= 1
    got = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=bw.auth)
    assert got.status == pb.APP_CHARGE_STATUS_EXPIRED
    _refused(
        lambda: bw.decide(charge.id), "APP_CHARGE_EXPIRED", grpc.StatusCode.FAILED_PRECONDITION
    )


def _period_end_tz():  # type: ignore[no-untyped-def]
    from datetime import UTC

    return UTC


def test_declined_charge_cannot_be_decided_again(bw: BillingWorld):
    charge = bw.create()
    assert bw.decide(charge.id, approve=False).app_charge.status == pb.APP_CHARGE_STATUS_DECLINED
    _refused(
        lambda: bw.decide(charge.id),
        "APP_CHARGE_ALREADY_DECIDED",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_merchant_lists_and_cancels_app_charges(bw: BillingWorld, new_merchant: MerchantCreds):
    charge = bw.create()
    listed = bw.stub.ListAppCharges(
        pb.ListAppChargesRequest(), metadata=bearer(new_merchant.test_key)
    )
    assert [c.id for c in listed.app_charges] == [charge.id]
    assert listed.app_charges[0].app_name == "Upsell Pro"
    canceled = bw.stub.CancelAppCharge(
        pb.CancelAppChargeRequest(id=charge.id), metadata=bearer(new_merchant.test_key)
    )
    assert canceled.status == pb.APP_CHARGE_STATUS_CANCELED


def _subscribe(bw: BillingWorld, name: str, amount: int, **fields: object) -> pb.AppCharge:
    return bw.create(
        kind=pb.APP_CHARGE_KIND_RECURRING,
        name=name,
        amount=amount,
        interval=pb.BILLING_INTERVAL_EVERY_30_DAYS,
        **fields,
    )


def _replace_basic_with_pro(
    bw: BillingWorld,
    db: Database,
    *,
    after: timedelta,
    pro_currency: str = "usd",
    **old_fields: object,
) -> tuple[pb.AppCharge, AppChargeRecord]:
    """Basic (30.00 every 30 days) replaced immediately by Pro (90.00), created and
    approved `after` the start of Basic's period (the domain with an injected clock)."""
    old = _subscribe(bw, "Basic", 3000, **old_fields)
    started = bw.decide(old.id).app_charge.current_period_start.ToDatetime(tzinfo=UTC)
    pro = charges.ChargeInput(
        kind="recurring",
        name="Pro",
        currency=pro_currency,
        return_url=RETURN_URL,
        amount=9000,
        interval="every_30_days",
        replacement="immediately",
    )
    with db.unit_of_work() as uow:
        uow.now = started + after
        new_id = charges.create_charge(uow, bw.caller, pro).id
        charges.decide(uow, bw.world.merchant.id, new_id, approve=True, settles_live=True)
        uow.commit()
    with db.read() as session:
        new = session.get(AppChargeRecord, new_id)
        assert new is not None
        return old, new


def test_replacing_immediately_invoices_the_old_period_and_credits_the_unused_time(
    bw: BillingWorld, db: Database
):
    old, new = _replace_basic_with_pro(bw, db, after=timedelta(days=10))
    old_now = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=old.id), metadata=bw.auth)
    assert old_now.status == pb.APP_CHARGE_STATUS_CANCELED
    # 10 days of 30 used: 3000 × 20/30 = 2000 comes back on Pro's first invoice.
    assert new.credit == 2000
    # Billed in arrears, Basic's current period is invoiced at once, at its full price.
    [basic] = _invoices(db, bw.app.id)
    assert [(line["app_charge_id"], line["amount"]) for line in basic.lines] == [(old.id, 3000)]
    assert (basic.total, basic.currency, basic.status) == (3000, "usd", "paid")
    with db.read() as session:
        paid = session.scalar(select(EventRecord.app_id).where(EventRecord.object_id == basic.id))
    assert paid == bw.app.id
    assert new.period_end is not None
    cycles.run_cycles(db, VAULT, new.period_end + timedelta(seconds=1))
    [_, pro] = _invoices(db, bw.app.id)
    assert [line["amount"] for line in pro.lines] == [9000, -2000]
    assert pro.total == 7000
    # The merchant pays Basic's 10 days used (1000) and Pro's period, nothing more.
    assert basic.total + pro.total == 1000 + 9000


def test_replacing_immediately_also_invoices_a_period_the_billing_run_has_not_reached(
    bw: BillingWorld, db: Database
):
    # Day 40: Basic's first period (days 0–30) ended, but no billing run billed it yet.
    old, new = _replace_basic_with_pro(bw, db, after=timedelta(days=40))
    [basic] = _invoices(db, bw.app.id)
    assert [(line["app_charge_id"], line["amount"]) for line in basic.lines] == [
        (old.id, 3000),
        (old.id, 3000),
    ]
    assert new.credit == 2000  # 20 of the second period's 30 days unused
    assert new.period_end is not None
    cycles.run_cycles(db, VAULT, new.period_end + timedelta(seconds=1))
    [_, pro] = _invoices(db, bw.app.id)
    # 40 days of Basic (4000) and Pro's period.
    assert basic.total + pro.total == 4000 + 9000


def test_replacing_immediately_in_another_currency_invoices_only_the_used_time(
    bw: BillingWorld, db: Database
):
    old, new = _replace_basic_with_pro(bw, db, after=timedelta(days=10), pro_currency="eur")
    assert new.credit == 0  # no credit across currencies
    [basic] = _invoices(db, bw.app.id)
    # 3000 - 3000 × 20/30 = 1000 for the 10 days used.
    assert [(line["app_charge_id"], line["amount"]) for line in basic.lines] == [(old.id, 1000)]
    assert (basic.total, basic.currency, basic.status) == (1000, "usd", "paid")
    assert new.period_end is not None
    cycles.run_cycles(db, VAULT, new.period_end + timedelta(seconds=1))
    [_, pro] = _invoices(db, bw.app.id)
    assert (pro.total, pro.currency) == (9000, "eur")


def test_replacing_a_subscription_in_its_trial_invoices_and_credits_nothing(
    bw: BillingWorld, db: Database
):
    _, new = _replace_basic_with_pro(bw, db, after=timedelta(days=1), trial_days=7)
    assert new.credit == 0
    assert _invoices(db, bw.app.id) == []
    assert new.period_end is not None
    cycles.run_cycles(db, VAULT, new.period_end + timedelta(seconds=1))
    assert [i.total for i in _invoices(db, bw.app.id)] == [9000]


def test_replacing_at_period_end_bills_the_old_period_at_its_end(bw: BillingWorld, db: Database):
    old = _subscribe(bw, "Basic", 3000)
    old_end = _period_end(bw.decide(old.id).app_charge)
    new = _subscribe(bw, "Pro", 9000, replacement_behavior=pb.REPLACEMENT_BEHAVIOR_AT_PERIOD_END)
    view = bw.decide(new.id)
    assert view.app_charge.credit == 0
    assert view.app_charge.current_period_start.ToDatetime(tzinfo=UTC) == old_end
    assert _invoices(db, bw.app.id) == []  # nothing invoiced at the replacement
    cycles.run_cycles(db, VAULT, old_end + timedelta(seconds=1))
    [basic] = _invoices(db, bw.app.id)
    assert [(line["app_charge_id"], line["amount"]) for line in basic.lines] == [(old.id, 3000)]
    got = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=old.id), metadata=bw.auth)
    assert got.status == pb.APP_CHARGE_STATUS_CANCELED
    cycles.run_cycles(db, VAULT, _period_end(view.app_charge) + timedelta(seconds=1))
    assert [i.total for i in _invoices(db, bw.app.id)] == [3000, 9000]


def test_proration_rounds_down_to_the_minor_unit():
    from datetime import UTC, datetime

    from flint.billing.models import AppChargeRecord

    start = datetime(2030, 1, 1, tzinfo=UTC)
    current = AppChargeRecord(
        amount=1000, period_start=start, period_end=start + timedelta(days=30), trial_ends_at=None
    )
    # 1000 × 20/30 = 666.67 → 666.
    assert charges.proration_credit(current, start + timedelta(days=10)) == 666


# --- live collection ------------------------------------------------------------------------


def _live_world(
    channel: grpc.Channel, db: Database, partner: PartnerCreds, merchant: MerchantCreds
):  # type: ignore[no-untyped-def]
    # Approving a live charge needs an acquirer: the server with the live double.
    return billing_world(channel, db, partner, merchant, environment="live")


def test_live_invoice_is_paid_with_the_card_on_file(
    live_channel: grpc.Channel,
    db: Database,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
):
    live = _live_world(live_channel, db, new_partner, new_merchant)
    card = live.stub.SetBillingCard(
        pb.SetBillingCardRequest(number="4242424242424242", exp_month=12, exp_year=2034, cvc="123"),
        metadata=live.session,
    )
    assert (card.brand, card.last4) == ("visa", "4242")
    charge = live.create(amount=1500)
    assert not charge.test
    view = live.decide(charge.id)
    cycles.run_cycles(db, LIVE_VAULT, _period_end(view.app_charge) + timedelta(seconds=1))
    [invoice] = _invoices(db, live.app.id)
    assert (invoice.status, invoice.amount_paid) == ("paid", 1500)
    assert invoice.processor_reference.startswith("test_ch_")


def test_failed_payment_retries_on_schedule_then_freezes_the_charge(
    live_channel: grpc.Channel,
    db: Database,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
):
    live = _live_world(live_channel, db, new_partner, new_merchant)
    live.stub.SetBillingCard(
        pb.SetBillingCardRequest(number="4000000000000002", exp_month=12, exp_year=2034, cvc="123"),
        metadata=live.session,
    )
    charge = live.create(
        kind=pb.APP_CHARGE_KIND_RECURRING,
        name="Pro",
        amount=2900,
        interval=pb.BILLING_INTERVAL_EVERY_30_DAYS,
    )
    view = live.decide(charge.id)
    at = _period_end(view.app_charge) + timedelta(seconds=1)
    cycles.run_cycles(db, LIVE_VAULT, at)
    [invoice] = _invoices(db, live.app.id)
    assert (invoice.status, invoice.attempt_count, invoice.decline_code) == (
        "open",
        1,
        "card_declined",
    )
    for delay in cycles.RETRY_SCHEDULE:
        at += delay
        cycles.run_cycles(db, LIVE_VAULT, at)
    [invoice] = _invoices(db, live.app.id)
    assert (invoice.status, invoice.attempt_count) == ("uncollectible", 4)
    got = live.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=live.auth)
    assert got.status == pb.APP_CHARGE_STATUS_FROZEN


def test_live_replacement_invoice_is_collected_by_the_next_run(
    live_channel: grpc.Channel,
    db: Database,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
):
    live = _live_world(live_channel, db, new_partner, new_merchant)
    live.stub.SetBillingCard(
        pb.SetBillingCardRequest(number="4242424242424242", exp_month=12, exp_year=2034, cvc="123"),
        metadata=live.session,
    )
    old, new = _replace_basic_with_pro(live, db, after=timedelta(days=1))
    [basic] = _invoices(db, live.app.id)
    assert (basic.status, basic.total, basic.amount_paid) == ("open", 3000, 0)
    assert basic.lines[0]["app_charge_id"] == old.id
    assert new.activated_at is not None
    cycles.run_cycles(db, LIVE_VAULT, new.activated_at + timedelta(seconds=1))
    [basic] = _invoices(db, live.app.id)
    assert (basic.status, basic.amount_paid) == ("paid", 3000)
    assert basic.processor_reference.startswith("test_ch_")


def test_approving_a_live_charge_without_an_acquirer_is_refused(
    channel: grpc.Channel, db: Database, new_partner: PartnerCreds, new_merchant: MerchantCreds
):
    live = _live_world(channel, db, new_partner, new_merchant)
    charge = live.create(amount=1500)
    with pytest.raises(grpc.RpcError) as caught:
        live.decide(charge.id)
    error = grpc_error(caught.value)
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "LIVE_PAYMENTS_NOT_CONFIGURED")
    got = live.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=live.auth)
    assert got.status == pb.APP_CHARGE_STATUS_PENDING
    # Declining needs no acquirer.
    assert live.decide(charge.id, approve=False).app_charge.status == (
        pb.APP_CHARGE_STATUS_DECLINED
    )


def test_live_invoice_is_not_collected_through_the_test_vault(
    live_channel: grpc.Channel,
    db: Database,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
):
    # A live charge approved while an acquirer was configured, billed by a run
    # without one: the test card on file is not taken as live money.
    live = _live_world(live_channel, db, new_partner, new_merchant)
    live.stub.SetBillingCard(
        pb.SetBillingCardRequest(number="4242424242424242", exp_month=12, exp_year=2034, cvc="123"),
        metadata=live.session,
    )
    view = live.decide(live.create(amount=1500).id)
    cycles.run_cycles(db, VAULT, _period_end(view.app_charge) + timedelta(seconds=1))
    [invoice] = _invoices(db, live.app.id)
    assert (invoice.status, invoice.amount_paid, invoice.decline_code) == (
        "open",
        0,
        "live_payments_not_configured",
    )
    assert invoice.processor_reference == ""


# --- freezing -------------------------------------------------------------------------------


def test_revoking_the_grant_freezes_the_charges_of_that_environment(
    bw: BillingWorld, db: Database, new_merchant: MerchantCreds
):
    charge = bw.create()
    bw.decide(charge.id)
    bw.world.installs.RevokeGrant(
        installs_pb.RevokeGrantRequest(id=bw.install_id, environment=1),
        metadata=bearer(new_merchant.test_key),
    )
    got = bw.stub.GetAppCharge(
        pb.GetAppChargeRequest(id=charge.id), metadata=bearer(new_merchant.test_key)
    )
    assert got.status == pb.APP_CHARGE_STATUS_FROZEN


def test_uninstalling_freezes_the_charges(bw: BillingWorld, new_merchant: MerchantCreds):
    pending = bw.create()
    bw.world.installs.UninstallInstall(
        installs_pb.UninstallInstallRequest(id=bw.install_id),
        metadata=bearer(new_merchant.test_key),
    )
    got = bw.stub.GetAppCharge(
        pb.GetAppChargeRequest(id=pending.id), metadata=bearer(new_merchant.test_key)
    )
    assert got.status == pb.APP_CHARGE_STATUS_FROZEN


# --- events and the partner's view ------------------------------------------------------------


def test_billing_events_are_addressed_to_the_charging_app_only(bw: BillingWorld, db: Database):
    charge = bw.create()
    bw.decide(charge.id)
    with db.read() as session:
        found = list(
            session.execute(
                select(EventRecord.type, EventRecord.app_id)
                .where(EventRecord.object_id == charge.id)
                .order_by(EventRecord.object_version)
            )
        )
    assert found == [("app_charge.created", bw.app.id), ("app_charge.activated", bw.app.id)]


def test_partner_sees_revenue_and_recurring_revenue_by_app(
    bw: BillingWorld, db: Database, new_partner: PartnerCreds, other_partner: PartnerCreds
):
    sub = bw.create(
        kind=pb.APP_CHARGE_KIND_RECURRING,
        name="Pro",
        amount=3650,
        interval=pb.BILLING_INTERVAL_ANNUAL,
    )
    bw.decide(sub.id)
    one = bw.create(amount=700)
    view = bw.decide(one.id)
    cycles.run_cycles(db, VAULT, _period_end(view.app_charge) + timedelta(seconds=1))
    bw.create(amount=1)  # stays pending
    report = bw.stub.GetAppRevenue(
        pb.GetAppRevenueRequest(app_id=bw.app.id, environment=1), metadata=bearer(new_partner.key)
    )
    assert {(s.status, s.count) for s in report.charges_by_status} == {
        (pb.APP_CHARGE_STATUS_ACTIVE, 2),
        (pb.APP_CHARGE_STATUS_PENDING, 1),
    }
    assert report.active_subscriptions == 1
    assert [(m.currency, m.amount) for m in report.revenue_to_date] == [("usd", 700)]
    # 3650 a year × 30 / 365 = 300 per 30 days.
    assert [(m.currency, m.amount) for m in report.monthly_recurring_revenue] == [("usd", 300)]
    _refused(
        lambda: bw.stub.GetAppRevenue(
            pb.GetAppRevenueRequest(app_id=bw.app.id), metadata=bearer(other_partner.key)
        ),
        "RESOURCE_NOT_FOUND",
        grpc.StatusCode.NOT_FOUND,
    )


# --- refusals, one each ---------------------------------------------------------------------


def test_charge_without_billing_write_is_refused_scope_missing(
    channel: grpc.Channel, db: Database, new_partner: PartnerCreds, new_merchant: MerchantCreds
):
    without = billing_world(channel, db, new_partner, new_merchant, scope="orders:read")
    _refused(without.create, "SCOPE_MISSING", grpc.StatusCode.PERMISSION_DENIED)


def test_charge_in_an_environment_without_grant_is_refused(
    channel: grpc.Channel, db: Database, new_partner: PartnerCreds, new_merchant: MerchantCreds
):
    test_only = billing_world(channel, db, new_partner, new_merchant)
    other_env = charges.AppCaller(
        charges.Tenant(new_merchant.id, "live"), test_only.app.id, test_only.install_id
    )
    with db.unit_of_work() as uow, pytest.raises(FlintError) as caught:
        charges.create_charge(
            uow,
            other_env,
            charges.ChargeInput(
                kind="one_time", name="Setup", currency="usd", return_url=RETURN_URL, amount=100
            ),
        )
    assert caught.value.reason == "GRANT_NOT_ACTIVE"


def test_confirming_another_merchants_charge_is_refused(
    bw: BillingWorld,
    channel: grpc.Channel,
    db: Database,
    new_partner: PartnerCreds,
    accounts_stub,
    admin_key: str,  # type: ignore[no-untyped-def]
):
    from tests.conftest import new_merchant as _unused  # noqa: F401

    charge = bw.create()
    from flint.accounts.v1 import accounts_service_pb2 as accounts_pb

    other = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            merchant=accounts_pb.Merchant(name="Other Shop", email=f"o-{charge.id}@example.com"),
            password="correct horse battery",
        ),
        metadata=bearer(admin_key),
    )
    session = accounts_stub.CreateMerchantSession(
        accounts_pb.CreateMerchantSessionRequest(
            email=other.email, password="correct horse battery", client_ip="127.0.0.1"
        ),
        metadata=bearer(bw.world.internal),
    )
    _refused(
        lambda: bw.stub.DecideAppCharge(
            pb.DecideAppChargeRequest(id=charge.id, approve=True), metadata=bearer(session.token)
        ),
        "RESOURCE_NOT_FOUND",
        grpc.StatusCode.NOT_FOUND,
    )


def test_usage_on_a_non_usage_charge_is_refused(bw: BillingWorld):
    charge = bw.create()
    bw.decide(charge.id)
    _refused(
        lambda: bw.stub.CreateUsageRecord(
            pb.CreateUsageRecordRequest(
                app_charge_id=charge.id,
                usage_record=pb.UsageRecord(description="x", amount=1, idempotency_key="k"),
            ),
            metadata=bw.auth,
        ),
        "APP_CHARGE_NOT_USAGE",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_usage_on_a_pending_charge_is_refused(bw: BillingWorld):
    charge = bw.create(kind=pb.APP_CHARGE_KIND_USAGE, amount=0, capped_amount=100)
    _refused(
        lambda: bw.stub.CreateUsageRecord(
            pb.CreateUsageRecordRequest(
                app_charge_id=charge.id,
                usage_record=pb.UsageRecord(description="x", amount=1, idempotency_key="k"),
            ),
            metadata=bw.auth,
        ),
        "APP_CHARGE_NOT_ACTIVE",
        grpc.StatusCode.FAILED_PRECONDITION,
    )


@pytest.mark.parametrize("amount", [0, -5])
def test_zero_or_negative_amounts_are_refused(bw: BillingWorld, amount: int):
    _refused(
        lambda: bw.create(amount=amount), "AMOUNT_NOT_POSITIVE", grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": pb.APP_CHARGE_KIND_ONE_TIME},
        {"kind": pb.APP_CHARGE_KIND_USAGE, "amount": 0, "capped_amount": 1000},
    ],
    ids=["one-time", "usage"],
)
def test_interval_on_a_charge_that_does_not_recur_is_refused(bw: BillingWorld, fields):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        bw.create(interval=pb.BILLING_INTERVAL_ANNUAL, **fields)
    details = grpc_error(caught.value)
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "FIELD_NOT_ALLOWED")
    assert details.fields == ["app_charge.interval"]


def test_fractional_amounts_are_refused_over_rest(bw: BillingWorld, rest):  # type: ignore[no-untyped-def]
    response = rest.post(
        "/v1/app_charges",
        headers={"authorization": f"Bearer {bw.token}"},
        json={
            "kind": "APP_CHARGE_KIND_ONE_TIME",
            "name": "Setup",
            "currency": "usd",
            "amount": 10.5,
            "return_url": RETURN_URL,
        },
    )
    assert response.status_code == 400


def test_duplicate_usage_records_with_one_key_count_once(bw: BillingWorld):
    charge = bw.create(kind=pb.APP_CHARGE_KIND_USAGE, amount=0, capped_amount=1000)
    bw.decide(charge.id)
    request = pb.CreateUsageRecordRequest(
        app_charge_id=charge.id,
        usage_record=pb.UsageRecord(description="x", amount=300, idempotency_key="same"),
    )
    first = bw.stub.CreateUsageRecord(request, metadata=bw.auth)
    second = bw.stub.CreateUsageRecord(request, metadata=bw.auth)
    assert first.id == second.id
    got = bw.stub.GetAppCharge(pb.GetAppChargeRequest(id=charge.id), metadata=bw.auth)
    assert got.balance_used == 300


def test_second_active_subscription_without_replacement_is_refused(bw: BillingWorld):
    fields = {
        "kind": pb.APP_CHARGE_KIND_RECURRING,
        "amount": 1000,
        "interval": pb.BILLING_INTERVAL_EVERY_30_DAYS,
    }
    first = bw.create(**fields)
    bw.decide(first.id)
    _refused(
        lambda: bw.create(**fields),
        "SUBSCRIPTION_ALREADY_ACTIVE",
        grpc.StatusCode.FAILED_PRECONDITION,
    )
