"""Idempotency keys: the record of one caller's key and the response it produced.

A caller (the scope: one install, merchant, partner, the platform operator, or one
internal credential) sends a key with a state-changing request. The first request
*claims* the key (`claim_in`) in the transaction of the handler's first change, and
the handler's change and the response it returns are committed together
(`complete`, inside the handler's own transaction), so a crash can never leave a
change without its response, nor a response without its change. A handler that
commits in several steps (reserve, call a processor, settle) commits the claim,
still in flight, with its first step. A key lives 24 hours from its claim.

Answers for a key that is already taken:

- done, same method and request → the stored response, without running anything;
- done or in flight, another method or request → IDEMPOTENCY_KEY_REUSED;
- in flight, same request → IDEMPOTENCY_KEY_IN_USE (the caller retries later);
- in flight but its lease (`locked_until`) ran out → the server that claimed it died
  before committing, so nothing happened: the new request takes the key over. A late
  commit of the old claim then finds its claim id gone and rolls back.

A request that FAILS is not stored: its claim is released (`release`), so the same
key may be sent again, with the same or a corrected request. (Stripe stores errors
too; Flint does not, because a refusal changed nothing that a retry could repeat,
and a refusal caused by a passing condition — a lock, a rate limit — should not
stick to the key for a day.)

Concurrency holds on both databases: SQLite serialises writers (`BEGIN IMMEDIATE`),
and on PostgreSQL the primary key refuses a second claim, whose transaction then
reads the row under a row lock. Either way a duplicate sent while the first
request's claim is not yet committed waits for that transaction, then answers
from what it committed: the stored response, IDEMPOTENCY_KEY_IN_USE (a first step
committed) or, if it rolled back, a claim of its own.

Responses may carry secrets shown once (a client secret, a token), so they are
stored encrypted (Fernet, keyed from the platform key `idempotency`, which is
itself sealed with the key-encryption key outside the database), and the request
is stored only as a keyed hash (HMAC-SHA256), so a request that carried a
password cannot be brute-forced from the table.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from cryptography.fernet import Fernet
from sqlalchemy import Index, String, Table, Text, and_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from flint.common.auth import Principal, PrincipalKind
from flint.common.db import Base, Database, UnitOfWork
from flint.common.errors import Code, FlintError, invalid_argument
from flint.common.jobs import Item, JobResult, run_job
from flint.common.platform_keys import IDEMPOTENCY_KEY, platform_key

METADATA_KEY = "idempotency-key"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
# How long a claim holds the key before another request may take it over. Longer
# than any handler should run; a handler still running past it loses its commit.
LEASE = timedelta(seconds=60)
# A claim can lose a race with a release on PostgreSQL (its insert conflicts, then
# the row is gone before it reads it); it simply tries again, this many times.
_CLAIM_ATTEMPTS = 3


class Status(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    DONE = "done"


class IdempotencyKeyRecord(Base):
    __tablename__ = "idempotency_keys"

    # "app:ins_…", "merchant:mer_…", "partner:par_…", "admin" or "internal:key_…".
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "test" or "live" for credentials bound to one; "" otherwise.
    environment: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    method: Mapped[str] = mapped_column(String(200))
    # HMAC-SHA256 (hex) of the method and the deterministic request bytes.
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    # Which claim holds the key: only that claim may complete or release it.
    claim_id: Mapped[str] = mapped_column(String(32))
    locked_until: Mapped[datetime]
    # The serialized response, Fernet-encrypted; set when done.
    response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)


@dataclass(frozen=True)
class KeyRef:
    """Which key: the caller's scope, its environment and the key itself."""

    scope: str
    environment: str
    key: str


@dataclass
class Claim:
    """This request holds the key until it completes or releases it."""

    ref: KeyRef
    claim_id: str
    method: str
    request_hash: str
    # Whether the claim's transaction committed (the key is held in the table).
    committed: bool = False
    completed: bool = False


@dataclass(frozen=True)
class Replay:
    """The key is done: answer with this stored response (serialized)."""

    response: bytes


def scope_of(principal: Principal) -> str:
    kind = principal.kind
    if kind is PrincipalKind.ADMIN:
        # Every admin key acts for the one platform operator.
        return "admin"
    if kind in (PrincipalKind.MERCHANT, PrincipalKind.MERCHANT_SESSION):
        return f"merchant:{principal.merchant}"
    if kind is PrincipalKind.APP:
        return f"app:{principal.id}"
    return f"{kind.value}:{principal.id}"


def key_ref(principal: Principal, key: str) -> KeyRef:
    """The key a caller sent, validated and scoped to the caller and environment."""
    if len(key) > MAX_KEY_LENGTH:
        raise invalid_argument(
            METADATA_KEY,
            "IDEMPOTENCY_KEY_INVALID",
            f"must be at most {MAX_KEY_LENGTH} characters",
        )
    return KeyRef(scope_of(principal), principal.environment, key)


def _keys(session: Session) -> _Keys:
    return _derive(platform_key(session, IDEMPOTENCY_KEY))


class _Keys:
    """The request-hash key and the response cipher, derived from the platform key."""

    def __init__(self, platform: bytes) -> None:
        self.request = hmac.digest(platform, b"flint.idempotency.request", "sha256")
        response = hmac.digest(platform, b"flint.idempotency.response", "sha256")
        self.fernet = Fernet(base64.urlsafe_b64encode(response))


@functools.lru_cache(maxsize=8)
def _derive(platform: bytes) -> _Keys:
    return _Keys(platform)


def request_hash(session: Session, method: str, request: bytes) -> str:
    key = _keys(session).request
    return hmac.new(key, method.encode() + b"\0" + request, hashlib.sha256).hexdigest()


def reused() -> FlintError:
    return invalid_argument(
        METADATA_KEY,
        "IDEMPOTENCY_KEY_REUSED",
        "was already used for a different request; use a new key",
    )


def in_use() -> FlintError:
    return FlintError(
        Code.ABORTED,
        "IDEMPOTENCY_KEY_IN_USE",
        "A request with this idempotency key is still in progress; retry shortly",
        metadata={"field": METADATA_KEY},
    )


_TABLE = cast(Table, IdempotencyKeyRecord.__table__)
_KEY_COLUMNS = (_TABLE.c.scope, _TABLE.c.environment, _TABLE.c.key)
# Core statements, built once: the ORM's bulk insert/update machinery costs
# more CPU than the statements themselves. ON CONFLICT DO NOTHING rather than
# catching the duplicate in a savepoint: two round trips fewer on PostgreSQL.
_INSERT = {
    "postgresql": pg_insert(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.claim_id),
    "sqlite": sqlite_insert(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.claim_id),
}
_BY_KEY = and_(*(column == bindparam(f"k_{column.name}") for column in _KEY_COLUMNS))
_LOCK_ROW = select(_TABLE).where(_BY_KEY).with_for_update()
_TAKE_OVER = update(_TABLE).where(_BY_KEY)
_HELD = and_(
    _BY_KEY,
    _TABLE.c.claim_id == bindparam("k_claim_id"),
    _TABLE.c.status == Status.IN_PROGRESS.value,
)
_COMPLETE = (
    update(_TABLE)
    .where(_HELD)
    .values(
        status=Status.DONE.value,
        response=bindparam("v_response"),
        locked_until=bindparam("v_locked_until"),
    )
)
_RELEASE = delete(_TABLE).where(_HELD)


def _key_params(ref: KeyRef) -> dict[str, str]:
    return {"k_scope": ref.scope, "k_environment": ref.environment, "k_key": ref.key}


def claim_in(uow: UnitOfWork, ref: KeyRef, method: str, request: bytes) -> Claim | Replay:
    """Claims `ref` for this request inside `uow` (the claim holds once `uow`
    commits), or answers from what the key already holds. Raises
    IDEMPOTENCY_KEY_REUSED or IDEMPOTENCY_KEY_IN_USE.

    On PostgreSQL, a claim of the same key in a transaction not yet committed
    makes this one wait for it, then see what it committed."""
    session, now = uow.session, uow.now
    connection = session.connection()
    digest = request_hash(session, method, request)
    new = Claim(ref, uuid.uuid4().hex, method, digest)
    held = _claim_fields(new, now)
    where = _key_params(ref)
    for _ in range(_CLAIM_ATTEMPTS):
        inserted = connection.execute(
            _INSERT[connection.dialect.name],
            {"scope": ref.scope, "environment": ref.environment, "key": ref.key, **held},
        ).scalar()
        if inserted is not None:
            return new
        # The key exists: decide under the row lock (PostgreSQL) or the
        # database lock this writer holds (SQLite).
        row = connection.execute(_LOCK_ROW, where).one_or_none()
        if row is None:
            continue  # released between our insert and our read: try again
        abandoned = row.status == Status.IN_PROGRESS and row.locked_until <= now
        if row.expires_at <= now or abandoned:
            # Expired, or its server died before committing anything: take it over.
            connection.execute(_TAKE_OVER.values(**held), where)
            return new
        if row.method != method or not hmac.compare_digest(row.request_hash, digest):
            raise reused()
        if row.status != Status.DONE or row.response is None:
            raise in_use()
        return Replay(_keys(session).fernet.decrypt(row.response.encode()))
    raise in_use()


def claim(db: Database, ref: KeyRef, method: str, request: bytes) -> Claim | Replay:
    """Claims `ref` in a transaction of its own (see `claim_in`)."""
    with db.unit_of_work() as uow:
        outcome = claim_in(uow, ref, method, request)
        if isinstance(outcome, Claim):
            uow.commit()
            outcome.committed = True
        return outcome


def _claim_fields(new: Claim, now: datetime) -> dict[str, object]:
    return {
        "method": new.method,
        "request_hash": new.request_hash,
        "status": Status.IN_PROGRESS.value,
        "claim_id": new.claim_id,
        "locked_until": now + LEASE,
        "response": None,
        "created_at": now,
        "expires_at": now + RETENTION,
    }


def complete(session: Session, held: Claim, response: bytes, now: datetime) -> None:
    """Marks the key done with its response, inside the transaction of the change
    itself. Raises IDEMPOTENCY_KEY_IN_USE if the claim was lost (its lease ran out
    and another request took the key), so that the change rolls back."""
    # The change's own statements first, in the order they were made.
    session.flush()
    result = session.connection().execute(
        _COMPLETE,
        {
            **_key_params(held.ref),
            "k_claim_id": held.claim_id,
            "v_response": _keys(session).fernet.encrypt(response).decode(),
            "v_locked_until": now,
        },
    )
    if result.rowcount != 1:
        raise in_use()


def release(db: Database, held: Claim) -> None:
    """Gives the key back after a request that changed nothing (it failed)."""
    with db.unit_of_work() as uow:
        uow.session.connection().execute(
            _RELEASE, {**_key_params(held.ref), "k_claim_id": held.claim_id}
        )
        uow.commit()


PURGE_JOB = "idempotency_purge"


def purge_expired(db: Database, now: datetime | None = None) -> JobResult:
    """Deletes keys past their 24 hours (they already count as absent), one
    caller's keys (scope and environment) per transaction, so a failure for one
    caller never keeps another's table growing. `done` counts the keys deleted.
    For a periodic maintenance job."""
    at = now or db.clock()

    def callers(waiting: frozenset[str]) -> list[Item]:
        with db.read() as session:
            rows = session.execute(
                select(IdempotencyKeyRecord.scope, IdempotencyKeyRecord.environment)
                .where(IdempotencyKeyRecord.expires_at <= at)
                .distinct()
            ).all()
        items = []
        for scope, environment in rows:
            kind, _, owner = scope.partition(":")
            merchant = owner if kind == PrincipalKind.MERCHANT.value else ""
            items.append(Item(f"{scope}|{environment}", merchant, environment))
        return [item for item in items if item.id not in waiting]

    def purge(item: Item) -> int:
        scope, _, environment = item.id.rpartition("|")
        with db.unit_of_work() as uow:
            result = uow.session.execute(
                delete(IdempotencyKeyRecord).where(
                    IdempotencyKeyRecord.scope == scope,
                    IdempotencyKeyRecord.environment == environment,
                    IdempotencyKeyRecord.expires_at <= at,
                )
            )
            uow.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    return run_job(db, PURGE_JOB, at, callers, purge)
