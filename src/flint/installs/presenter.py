"""Installs as the API shows them: protobuf messages, and the JSON snapshot that
events carry (the same JSON the REST API returns)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from flint.installs.models import GrantRecord, InstallRecord
from flint.installs.v1 import installs_service_pb2 as pb
from flint.server.convert import ENVIRONMENT_ENUMS, timestamp

STATUS_ENUMS: dict[str, pb.InstallStatus.ValueType] = {
    "active": pb.INSTALL_STATUS_ACTIVE,
    "revoked": pb.INSTALL_STATUS_REVOKED,
    "uninstalled": pb.INSTALL_STATUS_UNINSTALLED,
}


def install_status(install: InstallRecord, grants: list[GrantRecord]) -> str:
    if install.status == "uninstalled":
        return "uninstalled"
    return "active" if any(g.status == "active" for g in grants) else "revoked"


def install_pb(install: InstallRecord, grants: list[GrantRecord], app_name: str) -> pb.Install:
    return pb.Install(
        id=install.id,
        app_id=install.app_id,
        merchant_id=install.merchant_id,
        status=STATUS_ENUMS[install_status(install, grants)],
        grants=[
            pb.Grant(
                environment=ENVIRONMENT_ENUMS[grant.environment],
                scopes=grant.scopes,
                status=STATUS_ENUMS[grant.status],
                grant_time=timestamp(grant.granted_at),
                revoke_time=timestamp(grant.revoked_at),
            )
            for grant in sorted(grants, key=lambda g: g.environment, reverse=True)
        ],
        create_time=timestamp(install.created_at),
        uninstall_time=timestamp(install.uninstalled_at),
        version=install.version,
        app_name=app_name,
    )


def install_json(
    install: InstallRecord, grants: list[GrantRecord], app_name: str
) -> dict[str, Any]:
    return json_format.MessageToDict(
        install_pb(install, grants, app_name), preserving_proto_field_name=True
    )
