"""Cross-cutting concerns of every RPC, as interceptors (outermost first):

1. RequestLogInterceptor: request id, one log line per call.
2. ErrorInterceptor: domain errors → status + details; anything unexpected →
   INTERNAL with a logged error id. It also moves synchronous handlers (which
   talk to the database) onto the worker thread pool.
3. AuthInterceptor: resolves the principal and enforces the method's access rule.
4. IdempotencyInterceptor: claims the caller's `idempotency-key` on write RPCs,
   or answers with the response stored for it (see server/idempotency.py).

Handlers read the caller with `current_principal()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message
from sqlalchemy.exc import OperationalError

from flint.common import idempotency as idempotency_store
from flint.common.auth import Principal, authenticate, authorize
from flint.common.db import Database
from flint.common.errors import Code, FlintError
from flint.common.logs import log_event
from flint.server import idempotency
from flint.server.access import PUBLIC_SERVICES, AccessRule
from flint.server.status import GRPC_CODES, STATUS_DETAILS_KEY, to_rpc_status

logger = logging.getLogger("flint.rpc")

Behavior = Callable[..., Any]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]


@dataclass
class CallState:
    request_id: str
    method: str
    metadata: dict[str, str]
    principal: Principal | None = None
    code: str = "OK"
    reason: str = ""
    # "claimed" or "replayed" when the call came with an idempotency key.
    idempotency: str = ""


_current_call: contextvars.ContextVar[CallState] = contextvars.ContextVar("flint_call")


def current_call() -> CallState:
    return _current_call.get()


def current_principal() -> Principal:
    principal = _current_call.get().principal
    if principal is None:
        raise RuntimeError("no authenticated principal on this call")
    return principal


def _rewrap(handler: Handler, wrap: Callable[[Behavior], Behavior]) -> Any:
    """A copy of `handler` whose behavior is wrapped (unary-unary and unary-stream)."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise TypeError("Flint serves only unary-unary and unary-stream methods")


def _service_handler(details: grpc.HandlerCallDetails, handler: Handler | None) -> bool:
    """Whether the call is a Flint RPC (not health or reflection) that exists."""
    method: str = details.method
    return handler is not None and method.split("/")[1] not in PUBLIC_SERVICES


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    pairs = details.invocation_metadata or ()
    return {key: value for key, value in pairs if isinstance(value, str)}


def _is_stream(behavior: Behavior) -> bool:
    return inspect.isasyncgenfunction(behavior)


class RequestLogInterceptor(Interceptor):
    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not _service_handler(details, handler):
            return handler
        method: str = details.method
        metadata = _metadata(details)

        def start(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[CallState, float]:
            state = CallState(
                request_id=metadata.get("x-request-id") or uuid.uuid4().hex,
                method=method,
                metadata=metadata,
            )
            _current_call.set(state)
            return state, time.perf_counter()

        def finish(state: CallState, started: float) -> None:
            principal = state.principal
            log_event(
                logger,
                "rpc",
                method=state.method,
                code=state.code,
                reason=state.reason,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                request_id=state.request_id,
                principal=f"{principal.kind.value}:{principal.id}" if principal else "",
                idempotency=state.idempotency,
            )

        def wrap(behavior: Behavior) -> Behavior:
            if _is_stream(behavior):

                async def logged_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    state, started = start(context)
                    await context.send_initial_metadata((("x-request-id", state.request_id),))
                    try:
                        async for item in behavior(request, context):
                            yield item
                    finally:
                        finish(state, started)

                return logged_stream

            async def logged(request: Any, context: Any) -> Any:
                state, started = start(context)
                await context.send_initial_metadata((("x-request-id", state.request_id),))
                try:
                    return await behavior(request, context)
                finally:
                    finish(state, started)

            return logged

        return _rewrap(handler, wrap)


class ErrorInterceptor(Interceptor):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def _run(self, behavior: Behavior, request: Any, context: Any) -> Any:
        if inspect.iscoroutinefunction(behavior):
            return await behavior(request, context)
        # Synchronous handlers block on the database: run them on the worker pool,
        # with this call's context variables.
        call_context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, call_context.run, behavior, request, context
        )

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not _service_handler(details, handler):
            return handler

        def wrap(behavior: Behavior) -> Behavior:
            if _is_stream(behavior):

                async def guarded_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    try:
                        async for item in behavior(request, context):
                            yield item
                    except Exception as error:
                        await _abort(context, error)

                return guarded_stream

            async def guarded(request: Any, context: Any) -> Any:
                try:
                    return await self._run(behavior, request, context)
                except Exception as error:
                    await _abort(context, error)

            return guarded

        return _rewrap(handler, wrap)


async def _abort(context: Any, error: Exception) -> None:
    """Ends the call with the status `error` stands for. Re-raises aborts."""
    if isinstance(error, asyncio.CancelledError | grpc.aio.AbortError):
        raise error
    if not isinstance(error, FlintError):
        error = _unexpected(error)
    state = _current_call.get(None)
    if state is not None:
        state.code, state.reason = error.code.value, error.reason
    status = to_rpc_status(error)
    await context.abort(
        GRPC_CODES[error.code],
        status.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


def _unexpected(error: Exception) -> FlintError:
    if isinstance(error, OperationalError):
        log_event(logger, "database_unavailable", level=logging.WARNING, error=str(error.orig))
        return FlintError(
            Code.UNAVAILABLE, "DATABASE_UNAVAILABLE", "The database is unavailable; retry shortly"
        )
    error_id = f"err_{uuid.uuid4().hex[:16]}"
    logger.error("unhandled_error", exc_info=error, extra={"fields": {"error_id": error_id}})
    return FlintError(
        Code.INTERNAL,
        "INTERNAL",
        f"Internal error (reference {error_id})",
        metadata={"error_id": error_id},
    )


class AuthInterceptor(Interceptor):
    """Authenticates every call and enforces its method's declared access rule.
    A Flint method without a rule is refused: access is fail-closed."""

    def __init__(self, db: Database, rules: dict[str, AccessRule], *, issuer: str) -> None:
        self._db = db
        self._rules = rules
        self._issuer = issuer

    def _check(self, method: str, authorization: str | None) -> Principal:
        rule = self._rules.get(method)
        if rule is None:
            raise FlintError(
                Code.PERMISSION_DENIED, "ACCESS_RULE_MISSING", f"{method} declares no access rule"
            )
        with self._db.read() as session:
            principal = authenticate(session, authorization, self._db.clock(), issuer=self._issuer)
        authorize(principal, rule.principals, rule.scope)
        _current_call.get().principal = principal
        return principal

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not _service_handler(details, handler):
            return handler
        method: str = details.method
        authorization = _metadata(details).get("authorization")

        def wrap(behavior: Behavior) -> Behavior:
            if _is_stream(behavior):

                async def authorized_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    await asyncio.to_thread(
                        contextvars.copy_context().run, self._check, method, authorization
                    )
                    async for item in behavior(request, context):
                        yield item

                return authorized_stream

            def authorized(request: Any, context: Any) -> Any:
                self._check(method, authorization)
                return behavior(request, context)

            return authorized

        return _rewrap(handler, wrap)


class IdempotencyInterceptor(Interceptor):
    """Write RPCs with an `idempotency-key`: claims the key for the caller, then
    runs the handler, which completes the claim with `idempotency.commit`; or
    answers a retry with the stored response without running the handler. A
    handler that raises (or never calls `idempotency.commit`) releases the key.
    Innermost, so it runs on the worker thread after authentication."""

    def __init__(self, db: Database, write_methods: dict[str, type[Message]]) -> None:
        self._db = db
        self._write_methods = write_methods

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not _service_handler(details, handler):
            return handler
        method: str = details.method
        response_class = self._write_methods.get(method)
        key = _metadata(details).get(idempotency_store.METADATA_KEY)
        if response_class is None or not key or handler.unary_unary is None:
            return handler
        db = self._db

        def wrap(behavior: Behavior) -> Behavior:
            if _is_stream(behavior) or inspect.iscoroutinefunction(behavior):
                raise TypeError(f"{method}: idempotency keys need a synchronous unary handler")

            def idempotent(request: Message, context: Any) -> Any:
                state = current_call()
                response, state.idempotency = idempotency.call_with_key(
                    db,
                    principal=current_principal(),
                    key=key,
                    method=method,
                    request=request,
                    response_class=response_class,
                    run=lambda: behavior(request, context),
                )
                return response

            return idempotent

        return _rewrap(handler, wrap)
