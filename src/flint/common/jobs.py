"""Background jobs that one bad row cannot stop.

A job (checkout expiry, refund recovery, app billing, key clean-up, …) is a list
of work items — one object, or one tenant's share of the work — and `run_job`
does each item in its own unit of work. An item that raises is logged with its
id and error and written to `job_failures`, then retried with exponential
backoff; after `MAX_ATTEMPTS` failures it is *set aside* (`status=set_aside`),
where the operator sees it (`flint admin jobs list`) and can put it back
(`flint admin jobs retry`). Meanwhile the job goes on with every other item, so
one tenant's poisoned row never stops another tenant's upkeep.

Items set aside or waiting for their next attempt are skipped: the job's lister
is told their ids, so they do not fill its batch and starve healthy items.
Everything takes `now`, so tests drive a job deterministically.

`supervise` keeps a job loop alive: a loop that raises is logged and restarted
with backoff instead of ending the process's upkeep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Index, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base, Database
from flint.common.logs import log_event

logger = logging.getLogger("flint.jobs")
T = TypeVar("T")

# After this many failed attempts an item is set aside until an operator retries it.
MAX_ATTEMPTS = 5
# Backoff before the next attempt: 1, 2, 4, 8 minutes … at most an hour.
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
MAX_ERROR_LENGTH = 1000

RETRYING = "retrying"
SET_ASIDE = "set_aside"


class JobFailureRecord(Base):
    """An item a job failed on. Platform-wide (the operator's view across
    tenants), so keyed by job and item rather than by tenant."""

    __tablename__ = "job_failures"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The tenant the item belongs to, when it has one ("" otherwise).
    merchant_id: Mapped[str] = mapped_column(String(64), default="")
    environment: Mapped[str] = mapped_column(String(8), default="")
    # RETRYING (waits for next_attempt_at) or SET_ASIDE (waits for an operator).
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    error: Mapped[str] = mapped_column(Text)
    first_failed_at: Mapped[datetime]
    last_failed_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_job_failures_status", "status", "next_attempt_at"),)


@dataclass(frozen=True)
class Item:
    """One unit of a job's work: its id, and its tenant when it has one."""

    id: str
    merchant_id: str = ""
    environment: str = ""


@dataclass
class JobResult:
    # What the job changed (sessions expired, refunds settled, …).
    done: int = 0
    # Items that raised this run.
    failed: int = 0
    # Items that reached MAX_ATTEMPTS this run.
    set_aside: int = 0

    def add(self, other: JobResult) -> None:
        self.done += other.done
        self.failed += other.failed
        self.set_aside += other.set_aside


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure."""
    wait: timedelta = FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 16)
    return min(wait, MAX_RETRY)


# Lists the items due now, leaving out the ids given (set aside or not yet due).
Lister = Callable[[frozenset[str]], Iterable[Item]]
# Does one item in its own unit of work; returns how many things it changed.
Work = Callable[[Item], int]


def _describe(error: Exception) -> str:
    """An error as it is logged and stored: its type and message, bounded."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]


def run_job(db: Database, job: str, now: datetime, items: Lister, work: Work) -> JobResult:
    """Does `work` on every item `items` lists, each on its own; see the module doc."""
    with db.read() as session:
        failures = {
            record.item_id: record
            for record in session.scalars(
                select(JobFailureRecord).where(JobFailureRecord.job == job)
            )
        }
    waiting = frozenset(
        item_id
        for item_id, record in failures.items()
        if record.status == SET_ASIDE
        or (record.next_attempt_at is not None and record.next_attempt_at > now)
    )
    result = JobResult()
    listed = [item for item in items(waiting) if item.id not in waiting]
    seen = {item.id for item in listed}
    # Failed items due again that the lister no longer returns (paid, settled or
    # deleted meanwhile, or past its batch) are tried too: `work` re-checks
    # under lock and answers 0 when there is nothing to do, which clears them.
    listed += [
        Item(record.item_id, record.merchant_id, record.environment)
        for item_id, record in failures.items()
        if item_id not in waiting and item_id not in seen
    ]
    for item in listed:
        try:
            result.done += work(item)
        except Exception as error:
            result.failed += 1
            if _record_failure(db, job, item, error, now):
                result.set_aside += 1
        else:
            if item.id in failures:
                _forget(db, job, item.id)
    return result


def _record_failure(db: Database, job: str, item: Item, error: Exception, now: datetime) -> bool:
    """Notes the failure; True when it sets the item aside."""
    message = _describe(error)
    with db.unit_of_work() as uow:
        record = uow.session.get(JobFailureRecord, (job, item.id), with_for_update=True)
        if record is None:
            record = JobFailureRecord(
                job=job,
                item_id=item.id,
                merchant_id=item.merchant_id,
                environment=item.environment,
                attempts=0,
                first_failed_at=now,
            )
            uow.session.add(record)
        record.attempts += 1
        record.error = message
        record.last_failed_at = now
        set_aside = record.attempts >= MAX_ATTEMPTS
        record.status = SET_ASIDE if set_aside else RETRYING
        record.next_attempt_at = None if set_aside else now + backoff(record.attempts)
        attempts, next_attempt = record.attempts, record.next_attempt_at
        uow.commit()
    log_event(
        logger,
        "job_item_set_aside" if set_aside else "job_item_failed",
        level=logging.ERROR if set_aside else logging.WARNING,
        job=job,
        item=item.id,
        merchant=item.merchant_id,
        environment=item.environment,
        error=message,
        attempts=attempts,
        next_attempt_at=next_attempt,
    )
    return set_aside


def _forget(db: Database, job: str, item_id: str) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(
            delete(JobFailureRecord).where(
                JobFailureRecord.job == job, JobFailureRecord.item_id == item_id
            )
        )
        uow.commit()
    log_event(logger, "job_item_recovered", job=job, item=item_id)


def list_failures(db: Database, *, status: str | None = None) -> list[JobFailureRecord]:
    """Failed items, set-aside ones first (the operator's view)."""
    with db.read() as session:
        query = select(JobFailureRecord)
        if status:
            query = query.where(JobFailureRecord.status == status)
        records = list(
            session.scalars(query.order_by(JobFailureRecord.job, JobFailureRecord.item_id))
        )
    return sorted(records, key=lambda record: record.status != SET_ASIDE)


def retry(db: Database, item_id: str, *, job: str | None = None) -> int:
    """Makes a failed item due at once (a set-aside one gets a fresh run of
    attempts); returns how many failures matched."""
    with db.unit_of_work() as uow:
        query = update(JobFailureRecord).where(JobFailureRecord.item_id == item_id)
        if job:
            query = query.where(JobFailureRecord.job == job)
        changed = uow.session.execute(
            query.values(status=RETRYING, attempts=0, next_attempt_at=uow.now)
        )
        uow.commit()
    return int(changed.rowcount)  # type: ignore[attr-defined]


def guarded(job: str, run: Callable[[], T], failed: T) -> T:
    """Runs a whole job pass; a crash of the pass itself (the database down
    while listing items) is logged and answered with `failed`, so the passes of
    the other jobs in the same sweep still run."""
    try:
        return run()
    except Exception as error:
        log_event(
            logger,
            "job_failed",
            level=logging.ERROR,
            job=job,
            error=_describe(error),
        )
        return failed


# Restart delays of a supervised loop: 1 s doubling to a minute.
FIRST_RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 60.0


async def supervise(
    name: str,
    loop: Callable[[], Awaitable[None]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    first_delay: float = FIRST_RESTART_SECONDS,
    max_delay: float = MAX_RESTART_SECONDS,
) -> None:
    """Runs `loop` until it returns or is cancelled; when it raises, logs the
    error and starts it again after a delay that doubles with each crash in a
    row (a loop that crashes at once must not spin)."""
    delay = first_delay
    restarts = 0
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            restarts += 1
            log_event(
                logger,
                "job_loop_crashed",
                level=logging.ERROR,
                loop=name,
                error=_describe(error),
                restarts=restarts,
                restart_in_seconds=delay,
            )
            await sleep(delay)
            delay = min(delay * 2, max_delay)
