"""The hosted app's client of the core: one grpc.aio channel, the stubs it
needs, and gRPC errors turned into `CoreError` with their google.rpc details."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from flint.accounts.v1 import accounts_service_pb2_grpc
from flint.billing.v1 import billing_service_pb2_grpc
from flint.commerce.v1 import pay_service_pb2_grpc
from flint.installs.v1 import installs_service_pb2_grpc

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

# The core is down or slow: the caller may retry later.
UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class FieldViolation:
    """One BadRequest field violation: which input (`card.number`) and why
    (`INVALID_CARD_NUMBER`)."""

    field: str
    reason: str
    description: str


@dataclass
class CoreError(Exception):
    """A failed call to the core, with the stable reason and metadata of its
    ErrorInfo and the field violations of its BadRequest (all empty when the
    server sent none, e.g. when it is unreachable)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    @property
    def oauth_error(self) -> str:
        """The RFC 6749 error code, when the failure is an OAuth protocol error."""
        return self.metadata.get("oauth_error", "")

    @property
    def redirect(self) -> bool:
        """Whether the authorization error may be sent to the client's redirect URI."""
        return self.metadata.get("redirect") == "true"

    @property
    def unavailable(self) -> bool:
        return self.code in UNAVAILABLE_CODES

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> CoreError:
        code: grpc.StatusCode = error.code()
        message: str = error.details() or ""
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except ValueError:
            # The details disagree with the status line; trust the status line.
            status = None
        if status is None:
            return cls(code, message)
        info: error_details_pb2.ErrorInfo | None = None
        violations: list[FieldViolation] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and info is None:
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.reason, v.description)
                    for v in bad_request.field_violations
                )
        if info is None:
            return cls(code, message, violations=tuple(violations))
        return cls(code, message, info.reason, dict(info.metadata), tuple(violations))


class Core:
    """Stubs over one channel, opened at start-up and closed at shutdown."""

    def __init__(self, target: str, *, internal_key: str, timeout: float) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._internal_key = internal_key
        self._timeout = timeout
        self.oauth = installs_service_pb2_grpc.OAuthServiceStub(self._channel)
        self.accounts = accounts_service_pb2_grpc.AccountsServiceStub(self._channel)
        self.pay = pay_service_pb2_grpc.PayServiceStub(self._channel)
        self.billing = billing_service_pb2_grpc.BillingServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def internal(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        *,
        request_id: str = "",
        idempotency_key: str = "",
    ) -> ResponseT:
        """Calls the core with the hosted app's own internal key."""
        return await self.call(
            method,
            request,
            credential=self._internal_key,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        *,
        credential: str,
        request_id: str = "",
        idempotency_key: str = "",
    ) -> ResponseT:
        """Calls the core with `credential` (a merchant session token, or the
        internal key), and with `idempotency_key` when the call must change
        things at most once; raises CoreError on failure."""
        metadata: list[tuple[str, str]] = [("authorization", f"Bearer {credential}")]
        if request_id:
            metadata.append(("x-request-id", request_id))
        if idempotency_key:
            metadata.append(("idempotency-key", idempotency_key))
        try:
            response: Any = await method(request, metadata=metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise CoreError.from_rpc_error(error) from None
        result: ResponseT = response
        return result
