"""`flint admin jobs list` shows the items background jobs failed on (set-aside
ones first) and `flint admin jobs retry` makes one due again, as real
subprocesses against the test database."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from flint.common import jobs
from flint.common.db import Database
from flint.common.jobs import Item, JobFailureRecord
from tests.cli.conftest import run_flint, run_json


def _fail(db: Database, job: str, item: Item, times: int) -> None:
    def broken(_: Item) -> int:
        raise ValueError("Value out of range")

    now = datetime.now(UTC)
    for _ in range(times):
        jobs.run_job(db, job, now, lambda _: [item], broken)
        with db.read() as session:
            noted = session.get_one(JobFailureRecord, (job, item.id))
        now = noted.next_attempt_at or now


def test_failed_items_are_listed_and_a_set_aside_one_can_be_retried(db: Database, database_url):
    job = f"cli_job_{secrets.token_hex(3)}"
    stuck = Item(f"ain_{secrets.token_hex(4)}", "mer_poisoned", "live")
    flaky = Item(f"ain_{secrets.token_hex(4)}", "mer_other", "test")
    _fail(db, job, stuck, jobs.MAX_ATTEMPTS)
    _fail(db, job, flaky, 1)
    listed = [f for f in run_json(database_url, "admin", "jobs", "list")["job_failures"]]
    ours = [f for f in listed if f["job"] == job]
    assert [(f["item_id"], f["status"], f["attempts"]) for f in ours] == [
        (stuck.id, "set_aside", jobs.MAX_ATTEMPTS),
        (flaky.id, "retrying", 1),
    ]
    assert ours[0]["merchant_id"] == "mer_poisoned"
    assert ours[0]["error"] == "ValueError: Value out of range"
    # Set-aside items come first, whatever the job.
    statuses = [f["status"] for f in listed]
    assert statuses == sorted(statuses, key=lambda s: s != "set_aside")
    only_set_aside = run_json(database_url, "admin", "jobs", "list", "--status", "set_aside")
    assert stuck.id in {f["item_id"] for f in only_set_aside["job_failures"]}
    assert flaky.id not in {f["item_id"] for f in only_set_aside["job_failures"]}

    assert run_json(database_url, "admin", "jobs", "retry", stuck.id)["retried"] == 1
    with db.read() as session:
        retried = session.get_one(JobFailureRecord, (job, stuck.id))
    assert (retried.status, retried.attempts) == ("retrying", 0)
    assert retried.next_attempt_at is not None
    assert retried.next_attempt_at <= datetime.now(UTC)


def test_retrying_an_unknown_item_fails_with_a_message(database_url):
    result = run_flint(database_url, "admin", "jobs", "retry", "ain_nothing_here")
    assert result.returncode == 1
    assert "no failed job item 'ain_nothing_here'" in result.stderr


def test_serve_runs_its_sweep_unless_told_not_to(monkeypatch: pytest.MonkeyPatch):
    from flint.cli import SWEEP_ENV, build_parser

    monkeypatch.delenv(SWEEP_ENV, raising=False)
    assert build_parser().parse_args(["serve"]).no_sweep is False
    assert build_parser().parse_args(["serve", "--no-sweep"]).no_sweep is True
    # The servers `flint up` starts inherit the environment (tests set it).
    monkeypatch.setenv(SWEEP_ENV, "off")
    assert build_parser().parse_args(["serve"]).no_sweep is True
