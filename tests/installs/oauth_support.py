"""Driving the OAuth flow through the core RPCs, as the hosted web app does."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

import grpc

from flint.accounts import service as accounts
from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common.db import Database
from flint.installs.v1 import installs_service_pb2 as pb
from flint.installs.v1 import installs_service_pb2_grpc as pb_grpc
from tests.conftest import MerchantCreds, PartnerCreds, bearer

REDIRECT_URI = "https://loyalty.example.com/oauth/callback"
SCOPES = ["orders:read", "orders:write", "events:read"]


def internal_key(db: Database) -> str:
    with db.unit_of_work() as uow:
        key = accounts.create_internal_key(uow)
        uow.commit()
    return key.secret


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class OAuthWorld:
    """A partner's app and a signed-in merchant, with stubs to drive the flow."""

    channel: grpc.Channel
    internal: str
    partner: PartnerCreds
    merchant: MerchantCreds
    session: str
    app: apps_pb.App

    @property
    def oauth(self) -> pb_grpc.OAuthServiceStub:
        return pb_grpc.OAuthServiceStub(self.channel)

    @property
    def installs(self) -> pb_grpc.InstallsServiceStub:
        return pb_grpc.InstallsServiceStub(self.channel)

    def params(self, **overrides: str) -> pb.AuthorizationParameters:
        fields = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "orders:read events:read",
            "state": "xyz-state",
            "environment": "test",
        }
        fields.update(overrides)
        return pb.AuthorizationParameters(**fields)

    def approve(self, **overrides: str) -> pb.AuthorizationCode:
        return self.oauth.ApproveAuthorization(
            pb.ApproveAuthorizationRequest(parameters=self.params(**overrides)),
            metadata=bearer(self.session),
        )

    def exchange(self, code: str, **overrides: str) -> pb.TokenResponse:
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": self.app.client_id,
            "client_secret": self.app.client_secret,
        }
        fields.update(overrides)
        return self.oauth.ExchangeToken(
            pb.ExchangeTokenRequest(**fields), metadata=bearer(self.internal)
        )

    def refresh(self, refresh_token: str, **overrides: str) -> pb.TokenResponse:
        fields = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.app.client_id,
            "client_secret": self.app.client_secret,
        }
        fields.update(overrides)
        return self.oauth.ExchangeToken(
            pb.ExchangeTokenRequest(**fields), metadata=bearer(self.internal)
        )

    def install(self, **overrides: str) -> pb.TokenResponse:
        return self.exchange(self.approve(**overrides).code)

    def new_app(self, **overrides: object) -> apps_pb.App:
        fields: dict[str, object] = {
            "name": "Another App",
            "redirect_uris": [REDIRECT_URI],
            "requested_scopes": SCOPES,
        }
        fields.update(overrides)
        return apps_grpc.AppsServiceStub(self.channel).CreateApp(
            apps_pb.CreateAppRequest(app=apps_pb.App(**fields)),  # type: ignore[arg-type]
            metadata=bearer(self.partner.key),
        )


def make_world(
    channel: grpc.Channel, db: Database, partner: PartnerCreds, merchant: MerchantCreds
) -> OAuthWorld:
    internal = internal_key(db)
    app = apps_grpc.AppsServiceStub(channel).CreateApp(
        apps_pb.CreateAppRequest(
            app=apps_pb.App(
                name="Loyalty Stars",
                icon_url="https://cdn.example.com/icon.png",
                redirect_uris=[REDIRECT_URI, "http://localhost:3000/callback"],
                requested_scopes=SCOPES,
            )
        ),
        metadata=bearer(partner.key),
    )
    session = accounts_grpc.AccountsServiceStub(channel).CreateMerchantSession(
        accounts_pb.CreateMerchantSessionRequest(
            email=merchant.email, password="correct horse battery", client_ip="127.0.0.1"
        ),
        metadata=bearer(internal),
    )
    return OAuthWorld(channel, internal, partner, merchant, session.token, app)
