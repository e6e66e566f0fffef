"""The job runner: each item on its own, failures noted, retried with backoff,
set aside after repeated failures, skipped meanwhile; and the loop supervisor."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from flint.common import jobs
from flint.common.db import Database
from flint.common.jobs import Item, JobFailureRecord

T0 = datetime(2031, 3, 1, tzinfo=UTC)


class PoisonedRowError(Exception):
    pass


class FakeJob:
    """Items a, b, c of one tenant each; the items named in `bad` raise."""

    def __init__(self, bad: set[str]) -> None:
        self.name = f"test_job_{secrets.token_hex(4)}"
        self.bad = bad
        self.done: list[str] = []
        self.listed_without: list[frozenset[str]] = []

    def items(self, waiting: frozenset[str]) -> list[Item]:
        self.listed_without.append(waiting)
        return [Item(i, f"mer_{i}", "test") for i in ("a", "b", "c") if i not in waiting]

    def work(self, item: Item) -> int:
        if item.id in self.bad:
            raise PoisonedRowError(f"bad row {item.id}")
        self.done.append(item.id)
        return 1

    def run(self, db: Database, now: datetime) -> jobs.JobResult:
        return jobs.run_job(db, self.name, now, self.items, self.work)


def failure(db: Database, job: str, item_id: str) -> JobFailureRecord | None:
    with db.read() as session:
        return session.get(JobFailureRecord, (job, item_id))


def test_a_failing_item_is_noted_and_the_others_are_done(db: Database):
    job = FakeJob(bad={"b"})
    result = job.run(db, T0)
    assert (result.done, result.failed, result.set_aside) == (2, 1, 0)
    assert job.done == ["a", "c"]
    noted = failure(db, job.name, "b")
    assert noted is not None
    assert (noted.status, noted.attempts, noted.merchant_id, noted.environment) == (
        "retrying",
        1,
        "mer_b",
        "test",
    )
    assert noted.error == "PoisonedRowError: bad row b"
    assert noted.next_attempt_at == T0 + jobs.FIRST_RETRY
    assert failure(db, job.name, "a") is None


def test_a_failed_item_waits_for_its_backoff_and_is_not_listed_meanwhile(db: Database):
    job = FakeJob(bad={"b"})
    job.run(db, T0)
    job.bad.clear()
    job.done.clear()
    job.run(db, T0 + jobs.FIRST_RETRY - timedelta(seconds=1))
    assert job.listed_without[-1] == frozenset({"b"})
    assert job.done == ["a", "c"]
    job.done.clear()
    job.run(db, T0 + jobs.FIRST_RETRY)
    assert job.done == ["a", "b", "c"]
    # It worked: the failure is forgotten.
    assert failure(db, job.name, "b") is None


def test_a_failed_item_that_is_no_longer_listed_is_tried_once_more_and_cleared(db: Database):
    job = FakeJob(bad={"b"})
    job.run(db, T0)
    # Meanwhile "b" was settled some other way: the lister no longer returns it.
    job.bad.clear()
    job.items = lambda waiting: [Item("a", "mer_a", "test")]  # type: ignore[method-assign]
    job.done.clear()
    job.run(db, T0 + jobs.FIRST_RETRY)
    assert job.done == ["a", "b"]  # work re-checks it (here: succeeds)
    assert failure(db, job.name, "b") is None


def test_backoff_doubles_and_is_capped():
    assert [jobs.backoff(n) for n in (1, 2, 3)] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
    ]
    assert jobs.backoff(40) == jobs.MAX_RETRY


def test_an_item_failing_again_and_again_is_set_aside_until_an_operator_retries_it(
    db: Database,
):
    job = FakeJob(bad={"b"})
    now = T0
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        result = job.run(db, now)
        noted = failure(db, job.name, "b")
        assert noted is not None
        assert noted.attempts == attempt
        if attempt < jobs.MAX_ATTEMPTS:
            assert (noted.status, result.set_aside) == ("retrying", 0)
            assert noted.next_attempt_at is not None
            now = noted.next_attempt_at
    assert (noted.status, noted.next_attempt_at, result.set_aside) == ("set_aside", None, 1)
    # Set aside: never tried again, however late, while the others go on.
    job.bad.clear()
    job.done.clear()
    job.run(db, now + timedelta(days=30))
    assert job.done == ["a", "c"]
    listed = [f for f in jobs.list_failures(db) if f.job == job.name]
    assert [(f.item_id, f.status) for f in listed] == [("b", "set_aside")]
    assert jobs.retry(db, "b", job=job.name) == 1
    job.done.clear()
    job.run(db, datetime.now(UTC) + timedelta(seconds=1))
    assert job.done == ["a", "b", "c"]
    assert failure(db, job.name, "b") is None


def test_retrying_an_unknown_item_matches_nothing(db: Database):
    assert jobs.retry(db, f"nothing_{secrets.token_hex(4)}") == 0


def test_a_crashed_job_pass_is_logged_and_answered_with_the_fallback():
    def crash() -> jobs.JobResult:
        raise RuntimeError("database went away")

    assert jobs.guarded("crashing", crash, jobs.JobResult(failed=1)) == jobs.JobResult(failed=1)


def test_the_supervisor_restarts_a_crashed_loop_with_growing_delays():
    runs: list[int] = []
    waits: list[float] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) <= 3:
            raise RuntimeError(f"crash {len(runs)}")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    asyncio.run(jobs.supervise("test", loop, sleep=sleep, first_delay=1.0, max_delay=3.0))
    assert len(runs) == 4  # three crashes, three restarts
    assert waits == [1.0, 2.0, 3.0]


def test_the_supervisor_passes_cancellation_through():
    started = asyncio.Event()

    async def loop() -> None:
        started.set()
        await asyncio.Event().wait()

    async def main() -> bool:
        task = asyncio.create_task(jobs.supervise("test", loop))
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())


def test_a_failing_history_purge_is_noted_and_does_not_raise_into_the_worker(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    # The purge is one bulk delete by age; a failure of it (a lock timeout, a
    # bad row) must not end the claimer that calls it.
    from flint.webhooks import history
    from flint.webhooks.sender import DeliverySettings
    from flint.webhooks.worker import HISTORY_JOB, Worker

    def broken(*_: object, **__: object) -> int:
        raise RuntimeError("purge failed")

    monkeypatch.setattr(history, "purge_expired", broken)
    at = datetime.now(UTC) + timedelta(hours=1)
    worker = Worker(db, DeliverySettings(clock=lambda: at))
    worker.purge()
    noted = failure(db, HISTORY_JOB, HISTORY_JOB)
    assert noted is not None
    assert (noted.status, noted.error) == ("retrying", "RuntimeError: purge failed")
    monkeypatch.undo()
    worker.purge()  # not due yet: skipped; then due, and it works
    assert failure(db, HISTORY_JOB, HISTORY_JOB) is not None
    at += jobs.FIRST_RETRY
    worker.purge()
    assert failure(db, HISTORY_JOB, HISTORY_JOB) is None
