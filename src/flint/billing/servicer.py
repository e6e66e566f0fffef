"""gRPC billing service: protobuf in, one domain call, protobuf out."""

from __future__ import annotations

from typing import Any

from flint.billing import cards, charges, cycles, presenter, reports
from flint.billing.charges import AppCaller, ChargeInput, Confirmation
from flint.billing.v1 import billing_service_pb2 as pb
from flint.billing.v1 import billing_service_pb2_grpc as pb_grpc
from flint.billing.vault import CardVault
from flint.commerce.context import Tenant, tenant_of
from flint.commerce.presenter import ENVIRONMENTS, enum_name
from flint.common.auth import Principal, PrincipalKind, refuse_other_environment
from flint.common.db import Database
from flint.common.errors import invalid_argument
from flint.server import idempotency
from flint.server.convert import timestamp
from flint.server.rpc import current_principal

CONFIRMATION_STATES = {
    "open": pb.CONFIRMATION_STATE_OPEN,
    "decided": pb.CONFIRMATION_STATE_DECIDED,
    "expired": pb.CONFIRMATION_STATE_EXPIRED,
}


def _caller(principal: Principal) -> AppCaller:
    return AppCaller(tenant_of(principal), principal.app_id, principal.id)


def _app_id(principal: Principal) -> str:
    """An app sees only its own charges; a merchant sees all."""
    return principal.app_id if principal.kind is PrincipalKind.APP else ""


def _tenant_for_list(principal: Principal, environment: int) -> Tenant:
    wanted = enum_name(ENVIRONMENTS, environment, "environment")
    if principal.kind is PrincipalKind.MERCHANT_SESSION:
        if not wanted:
            raise invalid_argument("environment", "FIELD_REQUIRED", "is required with a session")
        return Tenant(principal.id, wanted)
    tenant = tenant_of(principal)
    if wanted:
        refuse_other_environment(tenant.environment, wanted, f"list {wanted} charges")
    return tenant


def confirmation_pb(view: Confirmation) -> pb.AppChargeConfirmation:
    return pb.AppChargeConfirmation(
        app_charge=presenter.charge_pb(view.charge, view.app_name),
        partner_name=view.partner_name,
        merchant_name=view.merchant_name,
        state=CONFIRMATION_STATES[view.state],
        cap_increase=view.cap_increase,
    )


class BillingServicer(pb_grpc.BillingServiceServicer):
    def __init__(self, db: Database, vault: CardVault) -> None:
        self._db = db
        self._vault = vault

    def CreateAppCharge(self, request: pb.CreateAppChargeRequest, context: Any) -> pb.AppCharge:
        given = request.app_charge
        values = ChargeInput(
            kind=enum_name(presenter.KINDS, given.kind, "app_charge.kind"),
            name=given.name,
            currency=given.currency,
            return_url=given.return_url,
            amount=given.amount,
            interval=enum_name(presenter.INTERVALS, given.interval, "app_charge.interval"),
            trial_days=given.trial_days,
            capped_amount=given.capped_amount,
            replacement=enum_name(
                presenter.REPLACEMENTS,
                given.replacement_behavior,
                "app_charge.replacement_behavior",
            ),
        )
        with self._db.unit_of_work() as uow:
            charge = charges.create_charge(uow, _caller(current_principal()), values)
            names = charges.app_names(uow.session, [charge])
            return idempotency.commit(uow, presenter.charge_pb(charge, names[charge.app_id]))

    def GetAppCharge(self, request: pb.GetAppChargeRequest, context: Any) -> pb.AppCharge:
        principal = current_principal()
        with self._db.read() as session:
            charge = charges.load_charge(
                session, tenant_of(principal), request.id, app_id=_app_id(principal)
            )
            names = charges.app_names(session, [charge])
        return presenter.charge_pb(charge, names.get(charge.app_id, ""))

    def ListAppCharges(
        self, request: pb.ListAppChargesRequest, context: Any
    ) -> pb.ListAppChargesResponse:
        principal = current_principal()
        tenant = _tenant_for_list(principal, request.environment)
        with self._db.read() as session:
            found, token = charges.list_charges(
                session,
                tenant,
                app_id=_app_id(principal),
                status=enum_name(presenter.STATUSES, request.status, "status"),
                page_size=request.page_size,
                page_token=request.page_token,
            )
            names = charges.app_names(session, found)
        return pb.ListAppChargesResponse(
            app_charges=[presenter.charge_pb(c, names.get(c.app_id, "")) for c in found],
            next_page_token=token,
        )

    def CancelAppCharge(self, request: pb.CancelAppChargeRequest, context: Any) -> pb.AppCharge:
        principal = current_principal()
        with self._db.unit_of_work() as uow:
            if principal.kind is PrincipalKind.MERCHANT_SESSION:
                charge = charges.cancel_for_merchant(uow, principal.id, request.id)
            else:
                charge = charges.cancel_charge(
                    uow, tenant_of(principal), request.id, app_id=_app_id(principal)
                )
            names = charges.app_names(uow.session, [charge])
            return idempotency.commit(uow, presenter.charge_pb(charge, names[charge.app_id]))

    def IncreaseAppChargeCap(
        self, request: pb.IncreaseAppChargeCapRequest, context: Any
    ) -> pb.AppCharge:
        with self._db.unit_of_work() as uow:
            charge = charges.increase_cap(
                uow, _caller(current_principal()), request.id, request.capped_amount
            )
            names = charges.app_names(uow.session, [charge])
            return idempotency.commit(uow, presenter.charge_pb(charge, names[charge.app_id]))

    def CreateUsageRecord(
        self, request: pb.CreateUsageRecordRequest, context: Any
    ) -> pb.UsageRecord:
        given = request.usage_record
        with self._db.unit_of_work() as uow:
            record = charges.record_usage(
                uow,
                _caller(current_principal()),
                request.app_charge_id,
                description=given.description,
                amount=given.amount,
                idempotency_key=given.idempotency_key,
            )
            return idempotency.commit(uow, presenter.usage_pb(record))

    def ListAppInvoices(
        self, request: pb.ListAppInvoicesRequest, context: Any
    ) -> pb.ListAppInvoicesResponse:
        principal = current_principal()
        with self._db.read() as session:
            found, token = cycles.list_invoices(
                session,
                tenant_of(principal),
                app_id=_app_id(principal),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListAppInvoicesResponse(
            app_invoices=[presenter.invoice_pb(i) for i in found], next_page_token=token
        )

    def GetAppRevenue(self, request: pb.GetAppRevenueRequest, context: Any) -> pb.AppRevenue:
        environment = enum_name(ENVIRONMENTS, request.environment, "environment") or "live"
        with self._db.read() as session:
            revenue = reports.app_revenue(
                session, current_principal().id, request.app_id, environment
            )
        return pb.AppRevenue(
            app_id=revenue.app_id,
            environment=ENVIRONMENTS[environment],
            charges_by_status=[
                pb.StatusCount(status=presenter.STATUSES[status], count=count)
                for status, count in sorted(revenue.by_status.items())
            ],
            active_subscriptions=revenue.active_subscriptions,
            revenue_to_date=[
                pb.MoneyAmount(currency=c, amount=a)
                for c, a in sorted(revenue.revenue_to_date.items())
            ],
            monthly_recurring_revenue=[
                pb.MoneyAmount(currency=c, amount=a)
                for c, a in sorted(revenue.monthly_recurring.items())
            ],
        )

    def GetAppChargeConfirmation(
        self, request: pb.GetAppChargeConfirmationRequest, context: Any
    ) -> pb.AppChargeConfirmation:
        with self._db.read() as session:
            view = charges.confirmation(
                session, current_principal().id, request.id, self._db.clock()
            )
        return confirmation_pb(view)

    def DecideAppCharge(
        self, request: pb.DecideAppChargeRequest, context: Any
    ) -> pb.AppChargeConfirmation:
        with self._db.unit_of_work() as uow:
            view = charges.decide(
                uow,
                current_principal().id,
                request.id,
                approve=request.approve,
                settles_live=self._vault.settles_live,
            )
            return idempotency.commit(uow, confirmation_pb(view))

    def SetBillingCard(self, request: pb.SetBillingCardRequest, context: Any) -> pb.BillingCard:
        with self._db.unit_of_work() as uow:
            card = cards.set_card(
                uow,
                self._vault,
                current_principal().id,
                number=request.number,
                exp_month=request.exp_month,
                exp_year=request.exp_year,
                cvc=request.cvc,
            )
            return idempotency.commit(uow, _card_pb(card))

    def GetBillingCard(self, request: pb.GetBillingCardRequest, context: Any) -> pb.BillingCard:
        with self._db.read() as session:
            card = cards.get_card(session, current_principal().merchant)
        return _card_pb(card) if card else pb.BillingCard()


def _card_pb(card: Any) -> pb.BillingCard:
    return pb.BillingCard(
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        create_time=timestamp(card.created_at),
    )
