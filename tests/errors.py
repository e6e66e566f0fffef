"""Reading google.rpc error details from gRPC errors and from Envoy's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass
class ErrorDetails:
    code: str
    reason: str
    message: str
    fields: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def grpc_error(error: grpc.RpcError) -> ErrorDetails:
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no status details on {error}"
    result = ErrorDetails(code=error.code().name, reason="", message=status.message)  # type: ignore[attr-defined]
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason = info.reason
            result.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.fields = [v.field for v in bad.field_violations]
    return result


def rest_error(response: httpx.Response) -> ErrorDetails:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    result = ErrorDetails(code=str(body["code"]), reason="", message=body["message"])
    for detail in body.get("details", []):
        if detail["@type"].endswith("google.rpc.ErrorInfo"):
            result.reason = detail["reason"]
            result.metadata = detail.get("metadata", {})
        elif detail["@type"].endswith("google.rpc.BadRequest"):
            result.fields = [v["field"] for v in detail["field_violations"]]
    return result
