"""How fast a merchant account can be guessed at, following OWASP's
Authentication and Credential Stuffing cheat sheets: growing delays rather
than a lock an attacker could put on someone else's account.

Three counters of failed sign-ins, each with its own backoff:

- per (email, client address): the account as seen from one place. Five
  failures are free (typos), then each further failure doubles the wait
  before the next try, up to 15 minutes. A success from that address resets
  it. Other addresses are unaffected, so failures from an attacker's address
  never lock the merchant out.
- per client address, over every account: stops one address spraying
  passwords across many accounts (credential stuffing), without touching those
  accounts for anyone else. More failures are free, since offices and mobile
  carriers put many people behind one address; a success does not reset it
  (an attacker could sign in to an account of their own to clear it).
- per trusted device: a browser that signed in to the account before holds a
  device token (a cookie on the hosted pages). With it, only the device's own
  failures count, so the merchant's browser keeps signing in while the account
  or the address is throttled for everyone else; a stolen device token still
  gets only five free guesses before the same growing delays.

A refused attempt does not check the password and is not recorded, so hammering
a throttled counter neither extends nor learns anything. Two attempts that race
may both pass a check: a throttle, unlike a money invariant, tolerates that."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from flint.accounts.models import SignInAttemptRecord, SignInDeviceRecord
from flint.common.db import Database
from flint.common.jobs import Item, JobResult, run_job


@dataclass(frozen=True)
class Backoff:
    """`free_failures` failures cost nothing; after that the next try must wait
    `first_delay`, doubling with each further failure, at most `max_delay`.
    Failures older than `window` are forgotten."""

    free_failures: int
    first_delay: timedelta
    max_delay: timedelta
    window: timedelta

    def delay_after(self, failures: int) -> timedelta:
        if failures < self.free_failures:
            return timedelta(0)
        doublings = min(failures - self.free_failures, 30)
        delay: timedelta = self.first_delay * (1 << doublings)
        return min(self.max_delay, delay)


PER_ACCOUNT_ADDRESS = Backoff(
    free_failures=5,
    first_delay=timedelta(seconds=2),
    max_delay=timedelta(minutes=15),
    window=timedelta(hours=24),
)
PER_ADDRESS = Backoff(
    free_failures=20,
    first_delay=timedelta(seconds=2),
    max_delay=timedelta(minutes=15),
    window=timedelta(hours=1),
)
PER_DEVICE = Backoff(
    free_failures=5,
    first_delay=timedelta(seconds=2),
    max_delay=timedelta(minutes=15),
    window=timedelta(hours=24),
)


def _wait(
    session: Session,
    backoff: Backoff,
    now: datetime,
    condition: ColumnElement[bool],
    *,
    since: datetime | None = None,
    after_id: int | None = None,
) -> timedelta:
    """How long the next attempt under `condition` must still wait, counting
    failures in the backoff's window, at or after `since` and recorded after
    attempt `after_id` (the last success)."""
    start = now - backoff.window
    if since is not None and since > start:
        start = since
    failures = select(func.count(), func.max(SignInAttemptRecord.at)).where(
        condition, SignInAttemptRecord.succeeded.is_(False), SignInAttemptRecord.at >= start
    )
    if after_id is not None:
        failures = failures.where(SignInAttemptRecord.id > after_id)
    count, last = session.execute(failures).one()
    if not count:
        return timedelta(0)
    return max(timedelta(0), last + backoff.delay_after(count) - now)


def _last_success(session: Session, condition: ColumnElement[bool]) -> int | None:
    # By id, not time: a failure and a success in the same clock tick stay ordered.
    last: int | None = session.scalar(
        select(func.max(SignInAttemptRecord.id)).where(
            condition, SignInAttemptRecord.succeeded.is_(True)
        )
    )
    return last


def untrusted_wait(session: Session, *, email: str, client_ip: str, now: datetime) -> timedelta:
    """The wait of an attempt without a trusted device: the longer of the
    (email, address) and the address counters."""
    if not client_ip:
        # No address (a direct internal caller): the account alone.
        pair = SignInAttemptRecord.email == email
        return _wait(session, PER_ACCOUNT_ADDRESS, now, pair, after_id=_last_success(session, pair))
    pair = (SignInAttemptRecord.email == email) & (SignInAttemptRecord.client_ip == client_ip)
    return max(
        _wait(session, PER_ACCOUNT_ADDRESS, now, pair, after_id=_last_success(session, pair)),
        _wait(session, PER_ADDRESS, now, SignInAttemptRecord.client_ip == client_ip),
    )


def device_wait(
    session: Session, *, device_id: str, last_success_at: datetime, now: datetime
) -> timedelta:
    """The wait of an attempt with a trusted device: its own failures only."""
    return _wait(
        session, PER_DEVICE, now, SignInAttemptRecord.device_id == device_id, since=last_success_at
    )


PURGE_JOB = "signin_history_purge"
# No counter looks further back than its window: older attempts only take space.
ATTEMPT_RETENTION = max(PER_ACCOUNT_ADDRESS.window, PER_ADDRESS.window, PER_DEVICE.window)


def purge_history(db: Database, now: datetime | None = None) -> JobResult:
    """Forgets sign-in attempts older than every counter's window and devices
    past their expiry, as an upkeep job (each table in its own transaction, a
    failure noted and retried; see flint.common.jobs). `done` counts rows deleted."""
    at = now or db.clock()
    deletes = {
        "attempts": delete(SignInAttemptRecord).where(
            SignInAttemptRecord.at < at - ATTEMPT_RETENTION
        ),
        "devices": delete(SignInDeviceRecord).where(SignInDeviceRecord.expires_at <= at),
    }

    def tables(waiting: frozenset[str]) -> list[Item]:
        return [Item(name) for name in deletes if name not in waiting]

    def purge(item: Item) -> int:
        with db.unit_of_work() as uow:
            result = uow.session.execute(deletes[item.id])
            uow.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    return run_job(db, PURGE_JOB, at, tables, purge)
