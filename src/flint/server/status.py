"""Domain errors → google.rpc.Status with ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from flint.common.errors import Code, FlintError

ERROR_DOMAIN = "flint.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

GRPC_CODES: dict[Code, grpc.StatusCode] = {code: grpc.StatusCode[code.value] for code in Code}


def to_rpc_status(error: FlintError) -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
        )
    )
    details = [info]
    if error.violations:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.reason
                    )
                    for v in error.violations
                ]
            )
        )
        details.append(bad_request)
    return status_pb2.Status(
        code=code_pb2.Code.Value(error.code.value), message=error.message, details=details
    )
