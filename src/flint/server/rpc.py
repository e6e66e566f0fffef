"""Every Flint RPC runs through one wrapper, built once per method when the
server starts (grpc.aio interceptors would rebuild their handlers on every call):

1. a request id (the caller's `x-request-id` when it is a plain token, or a
   new one), sent back in the trailing metadata of unary calls (with the
   status: no extra send) and the initial metadata of streams (with the first
   message), and one log line per call;
2. authentication and the method's access rule — a method without a rule is
   refused: access is fail-closed — then the caller's rate limit (see
   server/ratelimit.py), whose RateLimit-* fields go back as metadata;
3. requests with a NUL in any string are refused (see server/characters.py);
4. on write RPCs, the caller's `idempotency-key` (see server/idempotency.py);
5. the handler: synchronous handlers, which talk to the database, run on a
   worker pool together with 2 to 4, in one hop off the event loop (reads and
   writes have a pool each, see server/app.py);
6. domain errors become a status with details; anything unexpected becomes
   INTERNAL with a logged error id.

Handlers read the caller with `current_principal()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from sqlalchemy.exc import OperationalError

from flint.common import idempotency as idempotency_store
from flint.common.auth import Principal, PrincipalKind, authenticate, authorize
from flint.common.db import Database
from flint.common.errors import Code, FlintError
from flint.common.logs import log_event
from flint.server import characters, idempotency
from flint.server import ratelimit as rate_limits
from flint.server.access import access_rules
from flint.server.idempotency import write_methods
from flint.server.status import GRPC_CODES, STATUS_DETAILS_KEY, to_rpc_status

logger = logging.getLogger("flint.rpc")

Behavior = Callable[..., Any]


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
    logged: bool = False
    # The RateLimit-* fields of limited callers.
    rate_limit: tuple[tuple[str, str], ...] = ()

    @property
    def response_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every answer carries."""
        return (("x-request-id", self.request_id), *self.rate_limit)


# Set by Envoy's gRPC-JSON transcoder on the calls it made of REST requests.
TRANSCODED_MARK = "x-envoy-original-path"

_current_call: contextvars.ContextVar[CallState] = contextvars.ContextVar("flint_call")


def current_principal() -> Principal:
    principal = _current_call.get().principal
    if principal is None:
        raise RuntimeError("no authenticated principal on this call")
    return principal


@dataclass(frozen=True)
class _Method:
    """What the wrapper needs to know of one RPC, worked out at start-up."""

    name: str  # "/flint.commerce.v1.OrdersService/GetOrder"
    principals: frozenset[PrincipalKind] | None  # None: the method declares no access rule
    scope: str
    # Write RPCs: the response class an idempotent replay is decoded into.
    replay_class: type[Message] | None
    # The pool its synchronous part runs on.
    pool: Executor
    # Counts against the caller's write limit (else its read limit).
    write: bool


class Pipeline:
    """Wraps servicers' methods into gRPC method handlers (see the module doc)."""

    def __init__(
        self,
        db: Database,
        files: Iterable[FileDescriptor],
        *,
        reads: Executor,
        writes: Executor,
        issuer: str,
        limits: rate_limits.RateLimits | None = None,
    ) -> None:
        files = tuple(files)
        # None: no API rate limits (FLINT_RATE_LIMITS=off).
        self._limits = limits
        self._db = db
        self._read_pool = reads
        self._write_pool = writes
        self._issuer = issuer
        self._rules = access_rules(files)
        self._write_methods = write_methods(files)

    def add_servicer(
        self, server: grpc.aio.Server, servicer: object, service: ServiceDescriptor
    ) -> None:
        """Serves every method of `service` with `servicer`'s method of the same
        name, wrapped."""
        handlers = {m.name: self._handler(servicer, service, m) for m in service.methods}
        generic = grpc.method_handlers_generic_handler(service.full_name, handlers)
        server.add_generic_rpc_handlers((generic,))
        # Lets the server find the method without asking the generic handler.
        server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]

    def _handler(
        self, servicer: object, service: ServiceDescriptor, method: MethodDescriptor
    ) -> Any:
        name = f"/{service.full_name}/{method.name}"
        rule = self._rules.get(name)
        spec = _Method(
            name=name,
            principals=rule.principals if rule else None,
            scope=rule.scope if rule else "",
            replay_class=self._write_methods.get(name),
            pool=self._write_pool if name in self._write_methods else self._read_pool,
            write=name in self._write_methods,
        )
        behavior = getattr(servicer, method.name)
        request_deserializer = characters.deserializer(GetMessageClass(method.input_type))
        response_class = GetMessageClass(method.output_type)
        if method.client_streaming:
            raise TypeError(f"{name}: Flint serves only unary and server-streaming methods")
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(spec, behavior),
                request_deserializer=request_deserializer,
                response_serializer=response_class.SerializeToString,
            )
        if spec.replay_class is not None and inspect.iscoroutinefunction(behavior):
            raise TypeError(f"{name}: idempotency keys need a synchronous handler")
        return grpc.unary_unary_rpc_method_handler(
            self._unary(spec, behavior),
            request_deserializer=request_deserializer,
            response_serializer=response_class.SerializeToString,
        )

    # --- per call --------------------------------------------------------------

    def _unary(self, spec: _Method, behavior: Behavior) -> Behavior:
        run_async = inspect.iscoroutinefunction(behavior)

        async def unary(request: Any, context: Any) -> Any:
            call, started = _begin(spec, context)
            context.set_trailing_metadata(call.response_metadata)
            try:
                if run_async:
                    await _in_pool(spec.pool, self._authenticate, spec, call)
                    _refuse_if_refused(request)
                    await _send_rate_limit(call, context)
                    return await behavior(request, context)
                response = await _in_pool(
                    spec.pool, self._run, spec, call, behavior, request, context
                )
                await _send_rate_limit(call, context)
                return response
            except Exception as error:
                await _abort(call, context, error, started)
            finally:
                _finish(call, started)

        return unary

    def _streaming(self, spec: _Method, behavior: Behavior) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):
            raise TypeError(f"{spec.name}: a streaming handler must be an async generator")

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            call, started = _begin(spec, context)
            try:
                await _in_pool(spec.pool, self._authenticate, spec, call)
                _refuse_if_refused(request)
                # The headers go out with the first message, not before: a call
                # refused before it (a bad credential, a missing scope, a bad
                # cursor) ends with its status alone, so Envoy answers SSE
                # clients 401/403/400 with the JSON error instead of 200.
                headers_sent = False
                async for item in behavior(request, context):
                    if not headers_sent:
                        await context.send_initial_metadata(call.response_metadata)
                        headers_sent = True
                    yield item
            except Exception as error:
                await _abort(call, context, error, started)
            finally:
                _finish(call, started)

        return streaming

    def _run(
        self, spec: _Method, call: CallState, behavior: Behavior, request: Any, context: Any
    ) -> Any:
        principal = self._authenticate(spec, call)
        _refuse_if_refused(request)
        key = call.metadata.get(idempotency_store.METADATA_KEY)
        if spec.replay_class is None or not key:
            return behavior(request, context)
        response, call.idempotency = idempotency.call_with_key(
            self._db,
            principal=principal,
            key=key,
            method=spec.name,
            request=request,
            response_class=spec.replay_class,
            run=lambda: behavior(request, context),
        )
        return response

    def _authenticate(self, spec: _Method, call: CallState) -> Principal:
        if spec.principals is None:
            raise FlintError(
                Code.PERMISSION_DENIED,
                "ACCESS_RULE_MISSING",
                f"{spec.name} declares no access rule",
            )
        with self._db.read() as session:
            principal = authenticate(
                session, call.metadata.get("authorization"), self._db.clock(), issuer=self._issuer
            )
        authorize(principal, spec.principals, spec.scope)
        call.principal = principal
        if self._limits is not None:
            decision = self._limits.check(principal, write=spec.write)
            if decision is not None:
                call.rate_limit = rate_limits.headers(decision)
                if not decision.allowed:
                    raise rate_limits.rate_limited(decision)
        return principal


def _refuse_if_refused(request: Any) -> None:
    # After authentication: a caller without a credential learns nothing of
    # how its input is judged.
    if isinstance(request, characters.RefusedRequest):
        raise request.error()


async def _send_rate_limit(call: CallState, context: Any) -> None:
    """The RateLimit fields of an answer. gRPC callers get them in the trailing
    metadata, which goes out with the status at no extra cost. For REST, Envoy's
    transcoder makes response headers of the initial metadata only (not of a
    unary answer's trailers), so transcoded calls (marked by the transcoder's
    x-envoy-original-path) send them there: an extra send costing ~0.1 ms, paid
    by REST calls alone. (A refusal is trailers-only: its trailers become the
    headers.)"""
    if not call.rate_limit:
        return
    if TRANSCODED_MARK in call.metadata:
        await context.send_initial_metadata(call.rate_limit)
    else:
        context.set_trailing_metadata(call.response_metadata)


async def _in_pool(pool: Executor, function: Callable[..., Any], *args: Any) -> Any:
    # With this call's context variables, so handlers see current_principal().
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(pool, context.run, function, *args)


def _begin(spec: _Method, context: Any) -> tuple[CallState, float]:
    metadata = {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }
    call = CallState(
        request_id=request_id(metadata.get("x-request-id", "")),
        method=spec.name,
        metadata=metadata,
    )
    # Each RPC runs in its own task, so this is the call's own context.
    _current_call.set(call)
    return call, time.perf_counter()


# A caller's request id is kept only when it is a plain token that fits in a
# log line: it is echoed in response metadata, where gRPC refuses a TAB or
# non-ASCII text (the whole call then failed with INTERNAL "Invalid metadata").
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id(sent: str) -> str:
    """The caller's `x-request-id`, or a fresh one in place of a missing or unfit one."""
    return sent if REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


def _finish(call: CallState, started: float) -> None:
    """Writes the call's one log line (once, whichever path gets here first)."""
    if call.logged:
        return
    call.logged = True
    principal = call.principal
    log_event(
        logger,
        "rpc",
        method=call.method,
        code=call.code,
        reason=call.reason,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        request_id=call.request_id,
        principal=f"{principal.kind.value}:{principal.id}" if principal else "",
        idempotency=call.idempotency,
    )


async def _abort(call: CallState, context: Any, error: Exception, started: float) -> None:
    """Ends the call with the status `error` stands for. Re-raises aborts.

    The log line is written before the status goes out (abort sends it at
    once), so whoever got the answer can already find the call in the log."""
    if isinstance(error, grpc.aio.AbortError):
        raise error
    if not isinstance(error, FlintError):
        error = _unexpected(error)
    call.code, call.reason = error.code.value, error.reason
    status = to_rpc_status(error)
    _finish(call, started)
    await context.abort(
        GRPC_CODES[error.code],
        status.message,
        trailing_metadata=(
            (STATUS_DETAILS_KEY, status.SerializeToString()),
            *call.response_metadata,
        ),
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
