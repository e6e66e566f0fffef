"""A stand-in for the core's OAuthService and AccountsService that answers as
the contract says (google.rpc ErrorInfo with `oauth_error` and `redirect`), so
the hosted app's HTTP behaviour is tested without a database. The real core is
exercised by test_with_core.py."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.installs.v1 import installs_service_pb2 as pb
from flint.installs.v1 import installs_service_pb2_grpc as pb_grpc

INTERNAL_KEY = "fik_internal_test_key"
EMAIL = "shop@example.com"
RATE_LIMITED_EMAIL = "limited@example.com"
# Signs in, but the core has since expired the session.
EXPIRED_EMAIL = "expired@example.com"
PASSWORD = "correct horse battery"
SESSION_TOKEN = "fms_fake_session_token_do_not_render"
EXPIRED_SESSION = "fms_expired"
CLIENT_ID = "app_client_good"
CLIENT_SECRET = "s3cret value+/&="
REDIRECT_URI = "https://loyalty.example.com/oauth/callback?tenant=a%20b"
CODE = "code_fake_authorization_code"
ACCESS_TOKEN = "eyJ.fake.access"
REFRESH_TOKEN = "frt_fake_refresh"


@dataclass
class Call:
    method: str
    request: Any
    authorization: str


@dataclass
class FakeCore:
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    server: grpc.Server | None = None
    # When set, every call fails with this (code, reason, metadata).
    failure: tuple[grpc.StatusCode, str, dict[str, str]] | None = None

    def reset(self) -> None:
        self.calls.clear()
        self.failure = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(None)

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: dict[str, str],
) -> None:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="flint.dev", metadata=metadata))
    status = status_pb2.Status(code=code_pb2.Code.Value(code.name), message=message, details=[info])
    context.abort_with_status(rpc_status.to_status(status))


def _oauth(context: grpc.ServicerContext, error: str, message: str, *, redirect: bool) -> None:
    code = (
        grpc.StatusCode.UNAUTHENTICATED
        if error == "invalid_client"
        else (grpc.StatusCode.INVALID_ARGUMENT)
    )
    _abort(
        context,
        code,
        "OAUTH_" + error.upper(),
        message,
        {"oauth_error": error, "redirect": "true" if redirect else "false"},
    )


class _Base:
    def __init__(self, core: FakeCore) -> None:
        self.core = core

    def _record(self, method: str, request: Any, context: grpc.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata())
        authorization = str(metadata.get("authorization", ""))
        self.core.calls.append(Call(method, request, authorization))
        if self.core.failure is not None:
            code, reason, meta = self.core.failure
            _abort(context, code, reason, f"fake failure {reason}", meta)
        return authorization.removeprefix("Bearer ")


class FakeAccounts(_Base, accounts_grpc.AccountsServiceServicer):
    def CreateMerchantSession(
        self, request: accounts_pb.CreateMerchantSessionRequest, context: grpc.ServicerContext
    ) -> accounts_pb.MerchantSession:
        assert self._record("CreateMerchantSession", request, context) == INTERNAL_KEY
        if request.email == RATE_LIMITED_EMAIL:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                "Too many attempts",
                {"retry_after_seconds": "90"},
            )
        if request.email not in (EMAIL, EXPIRED_EMAIL) or request.password != PASSWORD:
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_CREDENTIALS",
                "Wrong email or password",
                {},
            )
        expires = timestamp_pb2.Timestamp()
        expires.GetCurrentTime()
        expires.seconds += 3600
        return accounts_pb.MerchantSession(
            token=SESSION_TOKEN if request.email == EMAIL else EXPIRED_SESSION,
            merchant_id="mer_fake",
            merchant_name="Corner <Shop>",
            expire_time=expires,
        )

    def RevokeMerchantSession(
        self, request: accounts_pb.RevokeMerchantSessionRequest, context: grpc.ServicerContext
    ) -> accounts_pb.RevokeMerchantSessionResponse:
        self._record("RevokeMerchantSession", request, context)
        return accounts_pb.RevokeMerchantSessionResponse()


class FakeOAuth(_Base, pb_grpc.OAuthServiceServicer):
    def _validate(self, params: pb.AuthorizationParameters, context: grpc.ServicerContext) -> None:
        if params.client_id != CLIENT_ID:
            _oauth(context, "invalid_client", "Unknown client_id", redirect=False)
        if params.redirect_uri != REDIRECT_URI:
            _oauth(context, "invalid_request", "redirect_uri is not registered", redirect=False)
        if params.scope == "bogus":
            _oauth(context, "invalid_scope", "Unknown scope 'bogus'", redirect=True)

    def StartAuthorization(
        self, request: pb.StartAuthorizationRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizationPrompt:
        credential = self._record("StartAuthorization", request, context)
        if credential == EXPIRED_SESSION:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_INVALID", "expired", {})
        self._validate(request.parameters, context)
        live = request.parameters.environment == "live"
        prompt = pb.AuthorizationPrompt(
            app_id="app_fake",
            app_name="Loyalty <Stars>",
            app_icon_url="https://cdn.example.com/icon.png",
            partner_name="Acme Apps",
            environment=accounts_pb.ENVIRONMENT_LIVE if live else accounts_pb.ENVIRONMENT_TEST,
            scopes=[
                pb.RequestedScope(name="orders:read", description="See your orders", granted=live),
                pb.RequestedScope(name="events:read", description="Receive events", granted=False),
            ],
        )
        if credential == SESSION_TOKEN:
            prompt.merchant_name = "Corner Shop"
            if live:
                prompt.change = pb.INSTALL_CHANGE_UPGRADE
                prompt.existing_environments.append(accounts_pb.ENVIRONMENT_TEST)
            else:
                prompt.change = pb.INSTALL_CHANGE_NEW_INSTALL
        return prompt

    def ApproveAuthorization(
        self, request: pb.ApproveAuthorizationRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizationCode:
        credential = self._record("ApproveAuthorization", request, context)
        if credential == EXPIRED_SESSION:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_INVALID", "expired", {})
        self._validate(request.parameters, context)
        return pb.AuthorizationCode(
            code=CODE,
            redirect_uri=request.parameters.redirect_uri,
            state=request.parameters.state,
            install_id="ins_fake",
        )

    def _client(self, client_id: str, secret: str, context: grpc.ServicerContext) -> None:
        if client_id != CLIENT_ID or secret not in ("", CLIENT_SECRET):
            _oauth(context, "invalid_client", "Client authentication failed", redirect=False)

    def ExchangeToken(
        self, request: pb.ExchangeTokenRequest, context: grpc.ServicerContext
    ) -> pb.TokenResponse:
        assert self._record("ExchangeToken", request, context) == INTERNAL_KEY
        self._client(request.client_id, request.client_secret, context)
        if request.grant_type not in ("authorization_code", "refresh_token"):
            _oauth(context, "unsupported_grant_type", "Unsupported grant_type", redirect=False)
        if request.grant_type == "authorization_code" and request.code != CODE:
            _oauth(context, "invalid_grant", "The code is invalid or was used", redirect=False)
        return pb.TokenResponse(
            access_token=ACCESS_TOKEN,
            token_type="Bearer",
            expires_in=3600,
            refresh_token=REFRESH_TOKEN,
            scope="orders:read events:read",
            install_id="ins_fake",
            merchant_id="mer_fake",
            environment="test",
        )

    def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> pb.RevokeTokenResponse:
        self._record("RevokeToken", request, context)
        self._client(request.client_id, request.client_secret, context)
        return pb.RevokeTokenResponse()

    def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: grpc.ServicerContext
    ) -> pb.IntrospectTokenResponse:
        self._record("IntrospectToken", request, context)
        self._client(request.client_id, request.client_secret, context)
        if request.token != ACCESS_TOKEN:
            return pb.IntrospectTokenResponse(active=False)
        return pb.IntrospectTokenResponse(
            active=True,
            scope="orders:read",
            client_id=CLIENT_ID,
            token_type="Bearer",
            exp=2_000_000_000,
            iat=1_900_000_000,
            sub="ins_fake",
            iss="http://127.0.0.1:8080",
            install_id="ins_fake",
            merchant_id="mer_fake",
            environment="test",
        )

    def GetJwks(self, request: pb.GetJwksRequest, context: grpc.ServicerContext) -> pb.Jwks:
        self._record("GetJwks", request, context)
        return pb.Jwks(
            keys=[pb.Jwk(kty="RSA", kid="key-1", use="sig", alg="RS256", n="AQAB-n", e="AQAB")]
        )


def start_fake_core() -> FakeCore:
    core = FakeCore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    # Methods the fake leaves out answer UNIMPLEMENTED (the generated base class).
    accounts_grpc.add_AccountsServiceServicer_to_server(FakeAccounts(core), server)  # type: ignore[abstract]
    pb_grpc.add_OAuthServiceServicer_to_server(FakeOAuth(core), server)
    core.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    core.server = server
    return core
