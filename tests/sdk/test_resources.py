"""The SDK's webhook endpoint, delivery and app charge resources, and the
refresh after a real `401 CREDENTIAL_EXPIRED`, against Flint started for real."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from flint.billing.v1 import billing_service_pb2 as billing_pb
from flint.common.db import Database
from flint.installs import signing
from flint.sdk import (
    AuthenticationError,
    FlintClient,
    NotFoundError,
    OAuthClient,
    OAuthSession,
    Tokens,
    verify_webhook,
)
from tests.sdk.conftest import Seed
from tests.webhooks.support import receiver


def test_webhook_endpoints_deliveries_and_attempts(seed: Seed):
    with (
        receiver() as hooks,
        FlintClient(api_key=seed.partner_key, base_url=seed.base_url) as partner,
    ):
        url = hooks.url
        endpoint = partner.webhook_endpoints.create(
            seed.app_id,
            {"url": url, "enabled_events": ["order.paid"], "environments": ["ENVIRONMENT_TEST"]},
        )
        assert endpoint.secret.startswith("whsec_")
        assert [e.id for e in partner.webhook_endpoints.list(seed.app_id)] == [endpoint.id]
        updated = partner.webhook_endpoints.update(
            {"id": endpoint.id, "description": "orders"}, ["description"]
        )
        assert (updated.description, updated.url) == ("orders", url)
        rotated = partner.webhook_endpoints.rotate_secret(endpoint.id)
        assert rotated.secret not in ("", endpoint.secret)

        tested = partner.webhook_endpoints.test(endpoint.id)
        assert tested.attempt.status_code == 200
        (request,) = hooks.requests
        event = verify_webhook(request.body, request.headers, rotated.secret)
        assert event.type == "webhook_endpoint.test"
        delivery_id = tested.delivery.id
        assert partner.webhook_deliveries.get(delivery_id).endpoint_id == endpoint.id
        assert delivery_id in [
            d.id for d in partner.webhook_deliveries.list(endpoint_id=endpoint.id)
        ]
        # One RPC, two routes: by delivery, and (the additional binding) by endpoint.
        by_delivery = partner.webhook_deliveries.attempts(delivery_id=delivery_id)
        assert [a.status_code for a in by_delivery] == [200]
        by_endpoint = partner.webhook_deliveries.attempts(endpoint_id=endpoint.id)
        assert [a.delivery_id for a in by_endpoint] == [delivery_id]

        partner.webhook_endpoints.delete(endpoint.id)
        with pytest.raises(NotFoundError):
            partner.webhook_endpoints.get(endpoint.id)


def test_app_charge_created_read_listed_and_canceled(seed: Seed):
    token = seed.dev_install("billing:write")["access_token"]
    with FlintClient(api_key=token, base_url=seed.base_url) as app:
        charge = app.app_charges.create(
            {
                "kind": "APP_CHARGE_KIND_ONE_TIME",
                "name": "Setup",
                "currency": "usd",
                "amount": 5000,
                "return_url": "https://app.example.com/billing",
            }
        )
        assert charge.status == billing_pb.APP_CHARGE_STATUS_PENDING
        assert charge.test
        assert charge.confirmation_url.startswith(seed.base_url)
        assert app.app_charges.get(charge.id).amount == 5000
        assert [c.id for c in app.app_charges.list()] == [charge.id]
        assert app.app_charges.cancel(charge.id).status == billing_pb.APP_CHARGE_STATUS_CANCELED


def expired_copy(database_url: str, access_token: str) -> str:
    """The same access token, validly signed by Flint's key, but expired an hour ago."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    issued = datetime.now(UTC) - timedelta(hours=2)
    claims |= {"iat": int(issued.timestamp()), "exp": int(issued.timestamp()) + 3600}
    db = Database(database_url)
    try:
        with db.read() as session:
            key = signing.keyring(session).signing_key(session, datetime.now(UTC))
    finally:
        db.dispose()
    return jwt.encode(claims, key.private, algorithm=signing.ALGORITHM, headers={"kid": key.kid})


def test_a_real_credential_expired_answer_refreshes_once_and_saves_the_new_tokens(seed: Seed):
    issued = seed.dev_install("orders:read")
    expired = expired_copy(seed.database_url, issued["access_token"])
    with FlintClient(api_key=expired, base_url=seed.base_url) as stale:
        with pytest.raises(AuthenticationError) as refused:
            stale.installs.get(issued["install_id"])
        assert refused.value.reason == "CREDENTIAL_EXPIRED"

    saved: list[Tokens] = []
    # The token looks fresh to the SDK (no early refresh): only the 401 can trigger it.
    tokens = Tokens(expired, issued["refresh_token"], expires_at=9e9)
    with OAuthClient(seed.client_id, seed.client_secret, base_url=seed.base_url) as oauth:
        session = OAuthSession(oauth, tokens, on_tokens=saved.append)
        with FlintClient(oauth=session, base_url=seed.base_url) as app:
            assert app.installs.get(issued["install_id"]).id == issued["install_id"]
    (new,) = saved
    assert new.access_token != expired
    assert new.refresh_token != issued["refresh_token"]
    assert session.tokens == new
