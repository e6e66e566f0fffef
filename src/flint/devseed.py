"""`flint dev seed`: a merchant, a partner and an example app, so a new user can
call the API at once. Each run creates a fresh set."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from flint.accounts import service as accounts
from flint.apps import service as apps
from flint.apps.models import AppRecord
from flint.common.auth import Principal, PrincipalKind
from flint.common.config import Settings
from flint.common.db import Database, UnitOfWork
from flint.common.errors import Code, FlintError
from flint.installs import oauth

EXAMPLE_REDIRECT_URI = "http://localhost:3000/oauth/callback"
EXAMPLE_SCOPES = (
    "orders:read",
    "orders:write",
    "checkout:write",
    "payment_links:read",
    "payment_links:write",
    "invoices:read",
    "invoices:write",
    "refunds:read",
    "refunds:write",
    "events:read",
    "billing:write",
)


@dataclass(frozen=True)
class SeedResult:
    merchant: accounts.MerchantWithKeys
    password: str
    partner: accounts.PartnerWithKey
    app: AppRecord
    client_secret: str

    def as_json(self) -> dict[str, Any]:
        keys = {f"{k.record.environment}_secret_key": k.secret for k in self.merchant.keys}
        return {
            "merchant_id": self.merchant.merchant.id,
            "merchant_email": self.merchant.merchant.email,
            "merchant_password": self.password,
            **keys,
            "partner_id": self.partner.partner.id,
            "partner_key": self.partner.key.secret,
            "app_id": self.app.id,
            "client_id": self.app.client_id,
            "client_secret": self.client_secret,
        }

    def lines(self) -> list[str]:
        data = self.as_json()
        return [
            "Seeded a test merchant, a partner and an example app (secrets shown once):",
            "",
            f"  merchant        {data['merchant_id']}",
            f"    sign-in       {data['merchant_email']} / {data['merchant_password']}",
            f"    test key      {data['test_secret_key']}",
            f"    live key      {data['live_secret_key']}",
            f"  partner         {data['partner_id']}",
            f"    partner key   {data['partner_key']}",
            f"  app             {data['app_id']}",
            f"    client_id     {data['client_id']}",
            f"    client_secret {data['client_secret']}",
            "",
            f"Try:  curl -s {Settings.from_env().public_url}/v1/apps \\",
            f"         -H 'Authorization: Bearer {data['partner_key']}'",
        ]


EXAMPLE_APP = apps.AppFields(
    name="Demo Loyalty",
    description="An example app created by `flint dev seed`.",
    redirect_uris=[EXAMPLE_REDIRECT_URI],
    requested_scopes=EXAMPLE_SCOPES,
)


def seed(uow: UnitOfWork, *, password: str, app: apps.AppFields = EXAMPLE_APP) -> SeedResult:
    """A fresh merchant (signing in with `password`), a partner, and `app`
    registered by that partner."""
    suffix = secrets.token_hex(3)
    merchant = accounts.create_merchant(
        uow, name="Demo Store", email=f"demo+{suffix}@example.com", password=password
    )
    partner = accounts.create_partner(uow, name="Demo Partner")
    uow.session.flush()
    record, client_secret = apps.create_app(
        uow, Principal(PrincipalKind.PARTNER, partner.partner.id), app
    )
    return SeedResult(merchant, password, partner, record, client_secret)


def dev_install(
    db: Database,
    *,
    client_id: str,
    client_secret: str,
    merchant_id: str,
    scope: str,
    environment: str,
    issuer: str,
) -> oauth.Tokens:
    """Installs an app on a merchant without the browser: the same approval and
    token exchange as the hosted flow, as if the merchant had clicked Approve.
    For local development only (it needs direct database access)."""
    with db.read() as session:
        app = session.scalar(select(AppRecord).where(AppRecord.client_id == client_id))
    if app is None:
        raise FlintError(Code.NOT_FOUND, "RESOURCE_NOT_FOUND", f"No app has client_id {client_id}")
    params = oauth.AuthorizeParams(
        response_type="code",
        client_id=client_id,
        redirect_uri=app.redirect_uris[0],
        scope=scope,
        state="",
        code_challenge="",
        code_challenge_method="",
        environment=environment,
    )
    merchant = Principal(PrincipalKind.MERCHANT_SESSION, merchant_id)
    with db.unit_of_work() as uow:
        code = oauth.approve_authorization(uow, merchant, params)
        uow.commit()
    with db.unit_of_work() as uow:
        tokens = oauth.exchange_token(
            uow,
            oauth.TokenRequest(
                grant_type="authorization_code",
                code=code.code,
                redirect_uri=params.redirect_uri,
                code_verifier="",
                refresh_token="",
                client_id=client_id,
                client_secret=client_secret,
            ),
            issuer=issuer,
        )
        uow.commit()
    return tokens
