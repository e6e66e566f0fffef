"""The hosted app-charge confirmation page against the real core: a decision
needs the CSRF token and the merchant's own session; decline returns to the app."""

from __future__ import annotations

import grpc
import httpx
import pytest

from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.billing.models import AppChargeRecord
from flint.billing.v1 import billing_service_pb2 as pb
from flint.billing.v1 import billing_service_pb2_grpc as billing_grpc
from flint.devseed import dev_install
from tests.conftest import bearer
from tests.hosted.conftest import PUBLIC_URL, World, csrf_from

RETURN_URL = "https://loyalty.example.com/billing/done"


@pytest.fixture
def charge(world: World, db, apps_stub, new_partner) -> pb.AppCharge:
    app = apps_stub.CreateApp(
        apps_pb.CreateAppRequest(
            app=apps_pb.App(
                name="Pro Reports",
                redirect_uris=["https://reports.example.com/cb"],
                requested_scopes=["billing:write"],
            )
        ),
        metadata=bearer(new_partner.key),
    )
    tokens = dev_install(
        db,
        client_id=app.client_id,
        client_secret=app.client_secret,
        merchant_id=world.merchant.id,
        scope="billing:write",
        environment="test",
        issuer=PUBLIC_URL,
    )
    with grpc.insecure_channel(world.core.target) as channel:
        return billing_grpc.BillingServiceStub(channel).CreateAppCharge(
            pb.CreateAppChargeRequest(
                app_charge=pb.AppCharge(
                    kind=pb.APP_CHARGE_KIND_ONE_TIME,
                    name="Setup fee",
                    currency="usd",
                    amount=4900,
                    return_url=RETURN_URL,
                )
            ),
            metadata=bearer(tokens.access_token),
        )


def status_of(world: World, charge_id: str) -> str:
    with world.db.read() as session:
        record = session.get(AppChargeRecord, charge_id)
        assert record is not None
        return record.status


def test_confirmation_page_shows_the_charge(world: World, charge: pb.AppCharge):
    world.sign_in()
    page = world.browser.get(f"/hosted/billing/charges/{charge.id}")
    assert page.status_code == 200
    assert "Pro Reports" in page.text
    assert "Setup fee" in page.text
    assert "49.00" in page.text


def test_decision_without_the_csrf_token_is_refused(world: World, charge: pb.AppCharge):
    world.sign_in()
    world.browser.get(f"/hosted/billing/charges/{charge.id}")
    response = world.browser.post(
        f"/hosted/billing/charges/{charge.id}", data={"decision": "approve"}
    )
    assert response.status_code == 403
    assert status_of(world, charge.id) == "pending"


def test_decline_returns_to_the_app(world: World, charge: pb.AppCharge):
    world.sign_in()
    page = world.browser.get(f"/hosted/billing/charges/{charge.id}")
    response = world.browser.post(
        f"/hosted/billing/charges/{charge.id}",
        data={"decision": "decline", "csrf_token": csrf_from(page.text)},
    )
    assert response.status_code == 303
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == RETURN_URL
    assert location.params["decision"] == "decline"
    assert status_of(world, charge.id) == "declined"


def test_signed_out_visitor_is_sent_to_sign_in(world: World, charge: pb.AppCharge):
    response = world.browser.get(f"/hosted/billing/charges/{charge.id}")
    assert response.status_code in (302, 303)
    assert response.headers["location"].startswith("/hosted/signin")


def test_merchant_lists_and_cancels_a_charge_on_the_hosted_page(world: World, charge: pb.AppCharge):
    world.sign_in()
    page = world.browser.get(f"/hosted/billing/charges/{charge.id}")
    world.browser.post(
        f"/hosted/billing/charges/{charge.id}",
        data={"decision": "approve", "csrf_token": csrf_from(page.text)},
    )
    overview = world.browser.get("/hosted/billing?environment=test")
    assert overview.status_code == 200
    assert "Setup fee" in overview.text
    response = world.browser.post(
        f"/hosted/billing/charges/{charge.id}/cancel",
        data={"environment": "test", "csrf_token": csrf_from(overview.text)},
    )
    assert response.status_code == 303
    assert status_of(world, charge.id) == "canceled"
