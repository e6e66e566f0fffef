"""Webhook delivery is fair between endpoints: a worker sends at most
`endpoint_concurrency` attempts to one endpoint at once, an endpoint has at
most `endpoint_leases` deliveries leased across every worker, claims take each
endpoint's oldest in turn, and a failing endpoint is paused (its breaker opens)
so its backlog holds no delivery slot until it answers again."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from google.protobuf import field_mask_pb2
from sqlalchemy import func, select

from flint.common.db import Database
from flint.webhooks.models import WebhookDeliveryRecord, WebhookEndpointRecord
from flint.webhooks.sender import DeliverySettings, Job, claim
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from flint.webhooks.worker import Worker, _Ready
from tests.webhooks.conftest import Hooks, wait_until_sequenced
from tests.webhooks.support import (
    attempts,
    deliveries,
    eventually,
    fast_settings,
    receiver,
    running_worker,
)

CAP = 2
# Longer than any test runs: a hanging receiver keeps its requests (and so its
# slots) until the test releases it.
HANG_SETTINGS = {
    "read_timeout": 60.0,
    "total_timeout": 60.0,
    "lease": timedelta(seconds=120),
    "endpoint_concurrency": CAP,
}
# The database's cap across workers, as small as a worker's own.
SHARED_CAP = {**HANG_SETTINGS, "endpoint_leases": CAP}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def backlog(hooks: Hooks, db: Database, url: str, count: int) -> str:
    """An endpoint with `count` due deliveries; returns its id."""
    endpoint = hooks.create_endpoint(url, events=("order.created",))
    for _ in range(count):
        hooks.merchant.create_order()
    wait_until_sequenced(db)
    return endpoint.id


def leased(db: Database, endpoint_id: str, now: datetime) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    WebhookDeliveryRecord.endpoint_id == endpoint_id,
                    WebhookDeliveryRecord.status == "pending",
                    WebhookDeliveryRecord.lease_until > now,
                )
            )
            or 0
        )


def statuses(db: Database, endpoint_id: str) -> list[str]:
    return [d.status for d in deliveries(db, endpoint_id)]


def endpoint_row(db: Database, endpoint_id: str) -> WebhookEndpointRecord:
    with db.read() as session:
        return session.get_one(WebhookEndpointRecord, endpoint_id)


def test_a_hanging_endpoint_with_a_backlog_leaves_the_other_slots_to_a_healthy_one(
    hooks: Hooks, db: Database
):
    settings = fast_settings(**HANG_SETTINGS)
    worker = Worker(db, settings, concurrency=2 * CAP, poll_seconds=0.05)
    stop = threading.Event()
    with receiver() as hanging, receiver() as healthy:
        hanging.default = "hang"
        hanging_id = backlog(hooks, db, hanging.url, 10)
        healthy_id = hooks.create_endpoint(healthy.url).id
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            hanging.wait_for(CAP)
            # The hanging endpoint holds its cap of slots (and its requests)
            # while the healthy endpoint's deliveries go out one after another.
            for sent in range(1, 4):
                hooks.merchant.create_order()
                eventually(lambda: statuses(db, healthy_id) == ["succeeded"] * sent, timeout=30)  # noqa: B023
            assert len(hanging.requests) == CAP
            assert statuses(db, hanging_id) == ["pending"] * (10 + 3)
        finally:
            hanging.release.set()
            stop.set()
            thread.join(30)
    assert len(healthy.requests) == 3


def test_the_cap_holds_across_workers_claiming_one_after_another(hooks: Hooks, db: Database):
    settings = fast_settings(**SHARED_CAP)
    endpoint_id = backlog(hooks, db, "http://127.0.0.1:9/hooks", 6)
    first = claim(db, settings, 10)
    assert [job.endpoint_id for job in first] == [endpoint_id] * CAP
    # Another worker finds the endpoint at its cap: nothing more is leased.
    assert claim(db, settings, 10) == []
    assert leased(db, endpoint_id, settings.clock()) == CAP


def test_a_claim_skips_the_endpoints_the_worker_holds_enough_of(hooks: Hooks, db: Database):
    settings = fast_settings()
    held = backlog(hooks, db, "http://127.0.0.1:9/held", 3)
    other = backlog(hooks, db, "http://127.0.0.1:9/other", 0)
    hooks.merchant.create_order()
    wait_until_sequenced(db)
    jobs = claim(db, settings, 10, skip=[held])
    assert [job.endpoint_id for job in jobs] == [other]
    assert len(claim(db, settings, 10)) == 4  # the held endpoint's, when asked


def test_a_worker_sends_each_endpoint_its_cap_at_most_and_takes_endpoints_in_turn():
    ready = _Ready(per_endpoint=2)

    def job(endpoint_id: str, n: int) -> Job:
        return Job(f"del_{endpoint_id}{n}", 1, "", endpoint_id, "", "", "event", b"", ())

    async def scenario() -> list[str]:
        for n in range(5):
            ready.put(0.0, job("a", n))
        ready.put(0.0, job("b", 0))
        taken = []
        for _ in range(3):  # a, b, a: then a is at its cap of 2 in flight
            queued = await ready.get()
            assert queued is not None
            taken.append(queued[1].delivery_id)
        assert ready.startable() == 0
        blocked = asyncio.create_task(ready.get())
        await asyncio.sleep(0)  # (a yield, not a wait: the task runs up to its wait)
        assert not blocked.done()  # a's jobs wait for a slot of a's
        ready.done(job("a", 0))
        queued = await blocked
        assert queued is not None
        taken.append(queued[1].delivery_id)
        assert [j.delivery_id for j in ready.close()] == ["del_a3", "del_a4"]
        assert await ready.get() is None  # closed: the senders stop
        return taken

    assert asyncio.run(scenario()) == ["del_a0", "del_b0", "del_a1", "del_a2"]


def test_the_cap_holds_across_workers_claiming_at_once(hooks: Hooks, db: Database):
    settings = fast_settings(**SHARED_CAP)
    endpoint_id = backlog(hooks, db, "http://127.0.0.1:9/hooks", 12)
    claimers = 6
    start = threading.Barrier(claimers)
    claimed: list[list[Job]] = []

    def one_worker() -> None:
        start.wait()
        claimed.append(claim(db, settings, 10))

    threads = [threading.Thread(target=one_worker) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(claimed) == claimers
    assert sum(len(jobs) for jobs in claimed) == CAP
    assert leased(db, endpoint_id, settings.clock()) == CAP


def test_the_cap_holds_across_two_running_workers(hooks: Hooks, db: Database):
    settings = fast_settings(**SHARED_CAP)
    workers = [Worker(db, settings, concurrency=2 * CAP, poll_seconds=0.01) for _ in range(2)]
    stop = threading.Event()
    with receiver() as hanging, receiver() as healthy:
        hanging.default = "hang"
        hanging_id = backlog(hooks, db, hanging.url, 10)
        healthy_id = hooks.create_endpoint(healthy.url).id
        threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
        for thread in threads:
            thread.start()
        try:
            hanging.wait_for(CAP)
            # Both workers keep claiming (the healthy endpoint's deliveries),
            # and neither takes more of the hanging endpoint's.
            for _ in range(6):
                hooks.merchant.create_order()
            eventually(
                lambda: [d.status for d in deliveries(db, healthy_id)] == ["succeeded"] * 6,
                timeout=30,
            )
            assert len(hanging.requests) == CAP
            assert leased(db, hanging_id, datetime.now(UTC)) == CAP
        finally:
            hanging.release.set()
            stop.set()
            for thread in threads:
                thread.join(30)


def test_a_claim_takes_each_endpoints_oldest_in_turn(hooks: Hooks, db: Database):
    settings = fast_settings(endpoint_leases=4)
    busy = backlog(hooks, db, "http://127.0.0.1:9/busy", 8)
    quiet = backlog(hooks, db, "http://127.0.0.1:9/quiet", 0)
    hooks.merchant.create_order()  # one event for each endpoint, after busy's backlog
    wait_until_sequenced(db)
    jobs = claim(db, settings, 4)
    # The busy endpoint waited longest, so it goes first, then each in turn:
    # its backlog does not fill the batch.
    assert [job.endpoint_id for job in jobs] == [busy, quiet, busy, busy]
    due = sorted(deliveries(db, busy), key=lambda d: (d.next_attempt_at, d.id))
    oldest = [d.id for d in due][:3]
    assert [job.delivery_id for job in jobs if job.endpoint_id == busy] == oldest


def test_a_failing_endpoint_backs_off_without_holding_slots(hooks: Hooks, db: Database):
    clock = Clock()
    settings = fast_settings(
        clock=clock,
        endpoint_leases=CAP,
        pause_min=timedelta(seconds=10),
        pause_max=timedelta(hours=1),
    )
    worker = Worker(db, settings, concurrency=4)
    with receiver() as failing, receiver() as healthy:
        failing.default = (503, b"", {})
        failing_id = backlog(hooks, db, failing.url, 6)
        clock.now = datetime.now(UTC)
        assert worker.run_once() == CAP
        assert len(failing.requests) == CAP
        paused = endpoint_row(db, failing_id)
        assert paused.paused_until == clock.now + settings.pause_min
        # While paused its backlog is not claimed: no slot held, no lease.
        healthy_id = hooks.create_endpoint(healthy.url).id
        hooks.merchant.create_order()
        wait_until_sequenced(db)
        clock.now = datetime.now(UTC)
        assert worker.run_once() == 1
        assert [d.status for d in deliveries(db, healthy_id)] == ["succeeded"]
        assert len(failing.requests) == CAP
        assert leased(db, failing_id, clock.now) == 0
        assert claim(db, settings, 10) == []
        # Once the pause is over, one probe at a time; it fails, and the next
        # pause is as long as the endpoint has been failing (it grows).
        clock.now += timedelta(seconds=30)
        assert worker.run_once() == 1
        assert len(failing.requests) == CAP + 1
        probed = endpoint_row(db, failing_id)
        assert probed.failing_since is not None
        assert probed.paused_until == clock.now + (clock.now - probed.failing_since)
        assert claim(db, settings, 10) == []
        # It answers again: the probe succeeds, the breaker closes, and the
        # endpoint gets its full cap back.
        failing.default = (200, b"ok", {})
        assert probed.paused_until is not None
        clock.now = probed.paused_until + timedelta(seconds=1)
        assert worker.run_once() == 1
        recovered = endpoint_row(db, failing_id)
        assert (recovered.paused_until, recovered.failing_since) == (None, None)
        assert worker.run_once() == CAP


def test_a_hanging_endpoint_that_times_out_is_paused_and_its_waiting_backlog_given_back(
    hooks: Hooks, db: Database
):
    settings = fast_settings(
        endpoint_concurrency=CAP,
        read_timeout=0.5,
        total_timeout=1.0,
        # No probe while the test runs: the pause outlasts it.
        pause_min=timedelta(hours=1),
        pause_max=timedelta(hours=1),
    )
    with receiver() as hanging, receiver() as healthy:
        hanging.default = "hang"
        hanging_id = backlog(hooks, db, hanging.url, 10)
        healthy_id = hooks.create_endpoint(healthy.url).id
        with running_worker(db, settings):
            # Its first attempts time out; the rest of its backlog, which the
            # worker had claimed, is given back unsent, and nothing is leased.
            eventually(lambda: endpoint_row(db, hanging_id).paused_until is not None)
            eventually(lambda: leased(db, hanging_id, datetime.now(UTC)) == 0)
            sent_before_pause = len(hanging.requests)
            hooks.merchant.create_order()
            eventually(lambda: statuses(db, healthy_id) == ["succeeded"])
            # Paused: nothing more goes to it. (A claim racing the first
            # failure's record may have sent one more round of CAP.)
            assert len(hanging.requests) == sent_before_pause
            assert CAP <= sent_before_pause <= 2 * CAP
            hanging.release.set()
    outcomes = [a.outcome for d in deliveries(db, hanging_id) for a in attempts(db, d.id)]
    assert outcomes == ["failed"] * sent_before_pause
    assert statuses(db, hanging_id).count("pending") == 11


def test_reenabling_an_endpoint_clears_its_pause(hooks: Hooks, db: Database):
    settings = DeliverySettings()
    endpoint_id = backlog(hooks, db, "http://127.0.0.1:9/hooks", 0)
    with db.unit_of_work() as uow:
        row = uow.session.get_one(WebhookEndpointRecord, endpoint_id)
        row.paused_until = settings.clock() + timedelta(hours=1)
        row.status = "disabled"
        row.disabled_reason = "failing"
        uow.commit()
    hooks.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(
                id=endpoint_id, status=pb.WEBHOOK_ENDPOINT_STATUS_ENABLED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=hooks.auth,
    )
    assert endpoint_row(db, endpoint_id).paused_until is None
