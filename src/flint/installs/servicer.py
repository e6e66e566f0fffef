"""gRPC InstallsService and OAuthService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from typing import Any

from flint.accounts.servicer import environment_from_pb
from flint.common.auth import PrincipalKind
from flint.common.db import Database
from flint.installs import oauth, presenter, service, signing
from flint.installs.service import InstallView
from flint.installs.v1 import installs_service_pb2 as pb
from flint.installs.v1 import installs_service_pb2_grpc as pb_grpc
from flint.server import idempotency
from flint.server.convert import ENVIRONMENT_ENUMS
from flint.server.rpc import current_principal

CHANGES: dict[str, pb.InstallChange.ValueType] = {
    "": pb.INSTALL_CHANGE_UNSPECIFIED,
    "new": pb.INSTALL_CHANGE_NEW_INSTALL,
    "upgrade": pb.INSTALL_CHANGE_UPGRADE,
    "none": pb.INSTALL_CHANGE_NONE,
}


def install_pb(view: InstallView) -> pb.Install:
    return presenter.install_pb(view.install, view.grants, view.app_name)


class InstallsServicer(pb_grpc.InstallsServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

    def GetInstall(self, request: pb.GetInstallRequest, context: Any) -> pb.Install:
        with self._db.read() as session:
            return install_pb(service.get_install(session, current_principal(), request.id))

    def ListInstalls(
        self, request: pb.ListInstallsRequest, context: Any
    ) -> pb.ListInstallsResponse:
        with self._db.read() as session:
            views, token = service.list_installs(
                session,
                current_principal(),
                page_size=request.page_size,
                page_token=request.page_token,
                app_id=request.app_id,
            )
        return pb.ListInstallsResponse(
            installs=[install_pb(view) for view in views], next_page_token=token
        )

    def UninstallInstall(self, request: pb.UninstallInstallRequest, context: Any) -> pb.Install:
        with self._db.unit_of_work() as uow:
            view = service.uninstall(uow, current_principal(), request.id)
            return idempotency.commit(uow, install_pb(view))

    def RevokeGrant(self, request: pb.RevokeGrantRequest, context: Any) -> pb.Install:
        with self._db.unit_of_work() as uow:
            view = service.revoke_grant(
                uow, current_principal(), request.id, environment_from_pb(request.environment)
            )
            return idempotency.commit(uow, install_pb(view))


def authorize_params(parameters: pb.AuthorizationParameters) -> oauth.AuthorizeParams:
    return oauth.AuthorizeParams(
        response_type=parameters.response_type,
        client_id=parameters.client_id,
        redirect_uri=parameters.redirect_uri,
        scope=parameters.scope,
        state=parameters.state,
        code_challenge=parameters.code_challenge,
        code_challenge_method=parameters.code_challenge_method,
        environment=parameters.environment,
    )


class OAuthServicer(pb_grpc.OAuthServiceServicer):
    def __init__(self, db: Database, *, issuer: str) -> None:
        self._db = db
        self._issuer = issuer

    def StartAuthorization(
        self, request: pb.StartAuthorizationRequest, context: Any
    ) -> pb.AuthorizationPrompt:
        principal = current_principal()
        merchant = principal if principal.kind is PrincipalKind.MERCHANT_SESSION else None
        with self._db.read() as session:
            prompt = oauth.start_authorization(
                session, merchant, authorize_params(request.parameters)
            )
        return pb.AuthorizationPrompt(
            app_id=prompt.app.id,
            app_name=prompt.app.name,
            app_icon_url=prompt.app.icon_url,
            partner_name=prompt.partner_name,
            scopes=[
                pb.RequestedScope(name=s.name, description=s.description, granted=s.granted)
                for s in prompt.scopes
            ],
            environment=ENVIRONMENT_ENUMS[prompt.environment],
            change=CHANGES[prompt.change],
            existing_environments=[ENVIRONMENT_ENUMS[e] for e in prompt.existing_environments],
            merchant_name=prompt.merchant_name,
        )

    def ApproveAuthorization(
        self, request: pb.ApproveAuthorizationRequest, context: Any
    ) -> pb.AuthorizationCode:
        params = authorize_params(request.parameters)
        with self._db.unit_of_work() as uow:
            issued = oauth.approve_authorization(uow, current_principal(), params)
            return idempotency.commit(
                uow,
                pb.AuthorizationCode(
                    code=issued.code,
                    redirect_uri=params.redirect_uri,
                    state=params.state,
                    install_id=issued.install_id,
                ),
            )

    def ExchangeToken(self, request: pb.ExchangeTokenRequest, context: Any) -> pb.TokenResponse:
        with self._db.unit_of_work() as uow:
            issued = oauth.exchange_token(
                uow,
                oauth.TokenRequest(
                    grant_type=request.grant_type,
                    code=request.code,
                    redirect_uri=request.redirect_uri,
                    code_verifier=request.code_verifier,
                    refresh_token=request.refresh_token,
                    client_id=request.client_id,
                    client_secret=request.client_secret,
                ),
                issuer=self._issuer,
            )
            return idempotency.commit(
                uow,
                pb.TokenResponse(
                    access_token=issued.access_token,
                    token_type="Bearer",  # noqa: S106 - the token type, not a secret
                    expires_in=issued.expires_in,
                    refresh_token=issued.refresh_token,
                    scope=" ".join(issued.scopes),
                    install_id=issued.install_id,
                    merchant_id=issued.merchant_id,
                    environment=issued.environment,
                ),
            )

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: Any) -> pb.RevokeTokenResponse:
        with self._db.unit_of_work() as uow:
            oauth.revoke_token(
                uow,
                token=request.token,
                client_id=request.client_id,
                client_secret=request.client_secret,
                issuer=self._issuer,
            )
            return idempotency.commit(uow, pb.RevokeTokenResponse())

    def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: Any
    ) -> pb.IntrospectTokenResponse:
        with self._db.read() as session:
            result = oauth.introspect_token(
                session,
                token=request.token,
                client_id=request.client_id,
                client_secret=request.client_secret,
                now=self._db.clock(),
                issuer=self._issuer,
            )
        if not result.active:
            return pb.IntrospectTokenResponse(active=False)
        return pb.IntrospectTokenResponse(active=True, **result.claims)  # type: ignore[arg-type]

    def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.Jwks:
        with self._db.read() as session:
            keys = signing.jwks(session, self._db.clock())
        return pb.Jwks(keys=[pb.Jwk(**key) for key in keys])
