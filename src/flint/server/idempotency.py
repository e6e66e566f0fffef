"""Idempotency keys on the gRPC side: which RPCs take one, and how a write
handler commits its change together with its response.

Every write handler ends its unit of work with

    return idempotency.commit(uow, response)

instead of `uow.commit(); return response`. When the call came with an
`idempotency-key`, the RPC pipeline (see rpc.py) runs the handler through
`call_with_key`, which claims the key before the handler runs, in a transaction
that the handler's first `unit_of_work()` takes over; `commit` stores the
response (encrypted) in the same transaction as the handler's change: claim,
change and response commit together, or none does. (So a handler's first unit of
work must end in a commit or an error: one that closes without committing drops
the claim, and the call ends IDEMPOTENCY_KEY_IN_USE rather than risk a second
change.) The storage and its rules live in flint.common.idempotency.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from flint.common import idempotency as store
from flint.common.auth import Principal
from flint.common.db import Database, UnitOfWork
from flint.common.logs import log_event

M = TypeVar("M", bound=Message)

logger = logging.getLogger("flint.rpc")

# The google.api.http verbs of RPCs that create or change something.
WRITE_VERBS = frozenset({"post", "patch", "delete"})

_claim: contextvars.ContextVar[store.Claim | None] = contextvars.ContextVar(
    "flint_idempotency_claim", default=None
)


def write_methods(files: Iterable[FileDescriptor]) -> dict[str, type[Message]]:
    """Maps `/package.Service/Method` of every write RPC (HTTP rule post, patch or
    delete) to its response class. Reads (get) ignore idempotency keys."""
    methods: dict[str, type[Message]] = {}
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                verb = options.Extensions[annotations_pb2.http].WhichOneof("pattern")
                if verb in WRITE_VERBS:
                    methods[f"/{service.full_name}/{method.name}"] = GetMessageClass(
                        method.output_type
                    )
    return methods


@contextmanager
def holding(claim: store.Claim) -> Iterator[store.Claim]:
    """Makes `claim` the current call's claim, for `commit` to complete."""
    token = _claim.set(claim)
    try:
        yield claim
    finally:
        _claim.reset(token)


def commit(uow: UnitOfWork, response: M) -> M:
    """Commits `uow` and returns `response`. If this call holds an idempotency
    key, the key is marked done with `response` in the same transaction, so a
    retry with the key gets this very response without running the change again.

    Call it once per RPC, last, with the response the RPC returns. Raises
    IDEMPOTENCY_KEY_IN_USE (and commits nothing) if the claim was lost meanwhile.
    """
    claim = _claim.get()
    if claim is None:
        uow.commit()
        return response
    if claim.completed:
        raise RuntimeError("idempotency.commit called twice in one call")
    store.complete(uow.session, claim, response.SerializeToString(), uow.now)
    uow.commit()
    claim.completed = True
    return response


def call_with_key(
    db: Database,
    *,
    principal: Principal,
    key: str,
    method: str,
    request: Message,
    response_class: type[Message],
    run: Callable[[], Message],
) -> tuple[Message, str]:
    """Runs `run` (the write handler) under the caller's idempotency `key`, or
    answers with the response stored for it. Returns the response and what
    happened to the key: "claimed" or "replayed".

    The claim is written in a transaction that the handler's first
    `unit_of_work()` takes over, so it commits with the handler's first commit
    (one commit per call, not two). A handler that fails before that commit rolls
    the claim back with its change; one that fails after it (or never calls
    `commit`) releases the key."""
    ref = store.key_ref(principal, key)
    payload = request.SerializeToString(deterministic=True)
    with db.handing_over() as uow:
        # A replay or a refusal here ends the call before the handler runs.
        outcome = store.claim_in(uow, ref, method, payload)
        if isinstance(outcome, store.Replay):
            return response_class.FromString(outcome.response), "replayed"
        uow.after_commit(lambda: _mark_committed(outcome))
        try:
            with holding(outcome):
                response = run()
        except BaseException:
            if outcome.committed and not outcome.completed:
                _release(db, outcome)
            raise
    if outcome.committed and not outcome.completed:
        # The claim committed but nothing was stored for the key (a handler that
        # committed with `uow.commit()`): give it back rather than block it
        # until its lease ends.
        _release(db, outcome)
    return response, "claimed"


def _mark_committed(claim: store.Claim) -> None:
    claim.committed = True


def _release(db: Database, claim: store.Claim) -> None:
    try:
        store.release(db, claim)
    except Exception as error:
        # The claim's lease runs out on its own; the handler's outcome matters more.
        log_event(logger, "idempotency_release_failed", level=logging.WARNING, error=str(error))
