"""A receiver down for an hour, then back: the worker retried on the published
schedule (simulated time: the worker reads the clock the test moves) until it
gave up, and one bulk replay of the cursor range brings every missed event, in
cursor order, with the webhook-id of the first try."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from flint.common.db import Database
from flint.webhooks import retry
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from flint.webhooks.worker import Worker
from tests.webhooks.conftest import Hooks, wait_until_sequenced
from tests.webhooks.support import deliveries, fast_settings, receiver

# The published schedule's first retries (5 s, 5 min, 30 min): spent within the hour.
SCHEDULE = retry.SCHEDULE[:3]
OUTAGE = timedelta(hours=1)
STEP = timedelta(minutes=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def send_all_due(worker: Worker, clock: Clock) -> None:
    """Runs the worker until nothing is due. A failing endpoint takes one
    attempt at a time and is paused after each (its breaker: `pause_max` in
    these settings), so each run is that much later than the last."""
    while worker.run_once():
        clock.now += worker.settings.pause_max


def test_receiver_down_for_an_hour_then_bulk_replay_brings_every_event_in_order(
    hooks: Hooks, db: Database
):
    clock = Clock()
    # One attempt at a time, so arrival order is claim order.
    worker = Worker(db, fast_settings(schedule=SCHEDULE, clock=clock), concurrency=1)
    with receiver() as rx:
        rx.default = (503, b"down for maintenance", {})
        endpoint = hooks.create_endpoint(rx.url)
        start = clock.now
        created = 0
        # An order every ten minutes of the hour; the worker runs every minute.
        while clock.now - start < OUTAGE:
            if (clock.now - start) % timedelta(minutes=10) == timedelta(0):
                hooks.merchant.create_order()
                created += 1
                wait_until_sequenced(db)
            send_all_due(worker, clock)
            clock.now += STEP
        # Three retries then none: every delivery failed, none is waiting.
        clock.now += max(SCHEDULE) * 2
        send_all_due(worker, clock)
        missed = deliveries(db, endpoint.id)
        assert [d.status for d in missed] == ["failed"] * created
        assert all(d.attempt_count == len(SCHEDULE) + 1 for d in missed)
        first_tries = {}
        for request in rx.requests:
            first_tries.setdefault(json.loads(request.body)["cursor"], request.headers)
        cursors = sorted(first_tries, key=lambda cursor: int(cursor.split(".", 1)[0]))

        rx.default = (200, b"ok", {})
        during_outage = len(rx.requests)
        replayed = hooks.stub.ReplayEvents(
            pb.ReplayEventsRequest(id=endpoint.id, start_cursor=cursors[0], end_cursor=cursors[-1]),
            metadata=hooks.auth,
        )
        assert replayed.queued == created
        send_all_due(worker, clock)
        after = rx.requests[during_outage:]
    # Every missed event, once, oldest first, under the webhook-id it first had.
    assert [json.loads(r.body)["cursor"] for r in after] == cursors
    assert [r.headers["webhook-id"] for r in after] == [
        first_tries[cursor]["webhook-id"] for cursor in cursors
    ]
    statuses = sorted(d.status for d in deliveries(db, endpoint.id))
    assert statuses == ["failed"] * created + ["succeeded"] * created
