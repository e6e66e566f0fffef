"""An app installed with billing:write, and helpers to drive app billing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.billing.charges import AppCaller
from flint.billing.v1 import billing_service_pb2 as pb
from flint.billing.v1 import billing_service_pb2_grpc as pb_grpc
from flint.commerce.context import Tenant
from flint.common.db import Database
from flint.installs.v1 import installs_service_pb2 as installs_pb
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.installs.oauth_support import OAuthWorld, make_world

RETURN_URL = "https://loyalty.example.com/billing/return"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class BillingWorld:
    world: OAuthWorld
    app: apps_pb.App
    token: str
    install_id: str
    environment: str

    @property
    def stub(self) -> pb_grpc.BillingServiceStub:
        return pb_grpc.BillingServiceStub(self.world.channel)

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return bearer(self.token)

    @property
    def session(self) -> tuple[tuple[str, str]]:
        return bearer(self.world.session)

    @property
    def caller(self) -> AppCaller:
        return AppCaller(
            Tenant(self.world.merchant.id, self.environment), self.app.id, self.install_id
        )

    def create(self, **fields: object) -> pb.AppCharge:
        values: dict[str, object] = {
            "kind": pb.APP_CHARGE_KIND_ONE_TIME,
            "name": "Setup",
            "currency": "usd",
            "amount": 5000,
            "return_url": RETURN_URL,
        }
        values.update(fields)
        return self.stub.CreateAppCharge(
            pb.CreateAppChargeRequest(app_charge=pb.AppCharge(**values)),  # type: ignore[arg-type]
            metadata=self.auth,
        )

    def decide(self, charge_id: str, *, approve: bool = True) -> pb.AppChargeConfirmation:
        return self.stub.DecideAppCharge(
            pb.DecideAppChargeRequest(id=charge_id, approve=approve), metadata=self.session
        )


def billing_world(
    channel: grpc.Channel,
    db: Database,
    partner: PartnerCreds,
    merchant: MerchantCreds,
    *,
    scope: str = "billing:write",
    environment: str = "test",
) -> BillingWorld:
    world = make_world(channel, db, partner, merchant)
    app = world.new_app(
        name="Upsell Pro", requested_scopes=["orders:read", "billing:write", "events:read"]
    )
    code = world.oauth.ApproveAuthorization(
        installs_pb.ApproveAuthorizationRequest(
            parameters=world.params(client_id=app.client_id, scope=scope, environment=environment)
        ),
        metadata=bearer(world.session),
    )
    tokens = world.exchange(code.code, client_id=app.client_id, client_secret=app.client_secret)
    return BillingWorld(world, app, tokens.access_token, tokens.install_id, environment)
