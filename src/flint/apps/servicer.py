"""gRPC AppsService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from flint.apps import service
from flint.apps.models import AppRecord
from flint.apps.service import AppFields
from flint.apps.v1 import apps_service_pb2 as pb
from flint.apps.v1 import apps_service_pb2_grpc as pb_grpc
from flint.common.db import Database
from flint.common.errors import invalid_argument
from flint.server import idempotency
from flint.server.convert import timestamp
from flint.server.rpc import current_principal

STATUSES: dict[int, str] = {pb.APP_STATUS_ACTIVE: "active", pb.APP_STATUS_DISABLED: "disabled"}
STATUS_ENUMS: dict[str, pb.AppStatus.ValueType] = {
    "active": pb.APP_STATUS_ACTIVE,
    "disabled": pb.APP_STATUS_DISABLED,
}


def app_pb(app: AppRecord, client_secret: str = "") -> pb.App:
    return pb.App(
        id=app.id,
        partner_id=app.partner_id,
        name=app.name,
        description=app.description,
        icon_url=app.icon_url,
        support_url=app.support_url,
        privacy_url=app.privacy_url,
        redirect_uris=app.redirect_uris,
        requested_scopes=app.requested_scopes,
        status=STATUS_ENUMS[app.status],
        client_id=app.client_id,
        client_secret=client_secret,
        create_time=timestamp(app.created_at),
        update_time=timestamp(app.updated_at),
    )


def app_fields(app: pb.App) -> AppFields:
    if app.status == pb.APP_STATUS_UNSPECIFIED:
        status = ""
    elif app.status in STATUSES:
        status = STATUSES[app.status]
    else:
        raise invalid_argument(
            "app.status", "UNKNOWN_ENUM_VALUE", f"{app.status} is not an AppStatus value"
        )
    return AppFields(
        name=app.name,
        description=app.description,
        icon_url=app.icon_url,
        support_url=app.support_url,
        privacy_url=app.privacy_url,
        redirect_uris=list(app.redirect_uris),
        requested_scopes=list(app.requested_scopes),
        status=status,
    )


class AppsServicer(pb_grpc.AppsServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

    def CreateApp(self, request: pb.CreateAppRequest, context: Any) -> pb.App:
        with self._db.unit_of_work() as uow:
            app, secret = service.create_app(uow, current_principal(), app_fields(request.app))
            return idempotency.commit(uow, app_pb(app, secret))

    def GetApp(self, request: pb.GetAppRequest, context: Any) -> pb.App:
        with self._db.read() as session:
            return app_pb(service.get_app(session, current_principal(), request.id))

    def ListApps(self, request: pb.ListAppsRequest, context: Any) -> pb.ListAppsResponse:
        with self._db.read() as session:
            apps, token = service.list_apps(
                session,
                current_principal(),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListAppsResponse(apps=[app_pb(app) for app in apps], next_page_token=token)

    def UpdateApp(self, request: pb.UpdateAppRequest, context: Any) -> pb.App:
        with self._db.unit_of_work() as uow:
            app = service.update_app(
                uow,
                current_principal(),
                request.app.id,
                app_fields(request.app),
                list(request.update_mask.paths),
            )
            return idempotency.commit(uow, app_pb(app))

    def DeleteApp(self, request: pb.DeleteAppRequest, context: Any) -> empty_pb2.Empty:
        with self._db.unit_of_work() as uow:
            service.delete_app(uow, current_principal(), request.id)
            return idempotency.commit(uow, empty_pb2.Empty())

    def RotateAppSecret(self, request: pb.RotateAppSecretRequest, context: Any) -> pb.App:
        with self._db.unit_of_work() as uow:
            app, secret = service.rotate_app_secret(uow, current_principal(), request.id)
            return idempotency.commit(uow, app_pb(app, secret))

    def ListScopes(self, request: pb.ListScopesRequest, context: Any) -> pb.ListScopesResponse:
        return pb.ListScopesResponse(
            scopes=[
                pb.Scope(name=scope.name, description=scope.description)
                for scope in service.scope_catalog()
            ]
        )
