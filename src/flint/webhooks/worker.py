"""`flint worker`: sends due webhook deliveries until stopped. Any number of
workers may run against one database; each claims its own deliveries.

One event loop does the work: it claims due deliveries in batches (one short
transaction leases up to hundreds, ahead of the senders when the lease allows),
sends them concurrently over keep-alive connections (aiohttp), and records the
finished attempts in batches (one transaction stores many).
Database calls run on a thread so the loop keeps sending meanwhile. The worker
wakes at once when deliveries appear: on PostgreSQL the sequencer's NOTIFY
(sent when it commits the fan-out), on SQLite a change of the database's
write-ahead log, which every commit touches; polling stays the safety net (for
retries coming due, and any missed wake-up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from datetime import datetime, timedelta

import psycopg
from sqlalchemy.exc import OperationalError

from flint.common.db import Database
from flint.common.jobs import Item, run_job, supervise
from flint.common.logs import log_event
from flint.webhooks import history
from flint.webhooks.sender import (
    DeliverySettings,
    Job,
    Result,
    Sender,
    claim,
    record_many,
    release,
)

logger = logging.getLogger("flint.webhooks")

DEFAULT_CONCURRENCY = 16
DEFAULT_POLL_SECONDS = 0.5
PURGE_INTERVAL = timedelta(hours=1)
HISTORY_JOB = "webhook_history_purge"
# The sequencer's channel (see flint.events.sequencer): it fires after a fan-out commits.
NOTIFY_CHANNEL = "flint_events"
# How often the SQLite write-ahead log is looked at for a commit (a stat call).
SQLITE_WATCH_SECONDS = 0.02
# Deliveries leased in one claim at most.
CLAIM_MAX = 512
# Claimed and not yet recorded, at most: when the database falls behind,
# claiming waits for it.
UNRECORDED_MAX = 2 * CLAIM_MAX
# Attempts stored in one transaction at most.
RECORD_BATCH = 512
# How long finished attempts wait for others to be stored with (at most).
RECORD_GATHER_SECONDS = 0.05
RECORD_GATHER_TICK = 0.005
# Time left in a lease, past the attempt's own timeout, for recording it.
RECORD_MARGIN_SECONDS = 1.0
# Weight of the newest attempt in the smoothed latency.
LATENCY_SMOOTHING = 0.05
# Latency is never taken as shorter than this when sizing claims.
MIN_LATENCY_SECONDS = 0.001


# The name a crashed delivery loop is logged under (job_loop_crashed).
LOOP_NAME = "webhook_delivery"


class Worker:
    def __init__(
        self,
        db: Database,
        settings: DeliverySettings,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.db = db
        self.settings = settings
        # Attempts sent at once.
        self.concurrency = max(1, concurrency)
        self.poll_seconds = poll_seconds
        self._last_purge: datetime | None = None

    def run_once(self) -> int:
        """Claims one batch, sends it and records it; returns how many (tests)."""

        async def once() -> int:
            jobs = await asyncio.to_thread(claim, self.db, self.settings, self.concurrency)
            async with Sender(self.settings, connections=self.concurrency) as sender:
                results = await asyncio.gather(*(sender.send(job) for job in jobs))
            if jobs:
                await asyncio.to_thread(self._record, list(zip(jobs, results, strict=True)))
            return len(jobs)

        return asyncio.run(once())

    def run(self, stop: threading.Event) -> None:
        """Keeps up to `concurrency` attempts going until `stop` is set, then
        lets those finish and records them, and gives back what was claimed
        but not yet sent. The loop is supervised: one that crashes (a bug, a row
        no claim expected) is logged and started again with backoff, instead of
        ending delivery for every endpoint; what it had claimed is sent again
        once its leases expire."""

        async def one_run() -> None:
            await _Loop(self, stop).run()

        async def pause(seconds: float) -> None:
            # Stopping cuts the pause short; the next run then ends at once.
            await asyncio.to_thread(stop.wait, seconds)

        asyncio.run(supervise(LOOP_NAME, one_run, sleep=pause))

    def _record(self, done: list[tuple[Job, Result]]) -> None:
        """Stores finished attempts. A failure to store leaves their leases to
        expire, and the deliveries are sent again."""
        try:
            statuses = record_many(self.db, done, self.settings)
        except Exception as error:
            if len(done) > 1:
                # One bad row must not hold back the others: store them one by one.
                for item in done:
                    self._record([item])
                return
            log_event(
                logger,
                "webhook_record_failed",
                level=logging.WARNING,
                delivery=done[0][0].delivery_id,
                error=str(error),
            )
            return
        for (job, result), status in zip(done, statuses, strict=True):
            log_event(
                logger,
                "webhook_attempt",
                delivery=job.delivery_id,
                endpoint=job.endpoint_id,
                event_id=job.event_id,
                attempt=job.number,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
                delivery_status=status,
            )

    def _release(self, jobs: list[Job]) -> None:
        """Gives back deliveries claimed but not sent; a failure leaves their
        leases to expire instead."""
        try:
            release(self.db, jobs)
        except Exception as error:
            log_event(logger, "webhook_release_failed", level=logging.WARNING, error=str(error))
            return
        log_event(logger, "webhook_released", deliveries=len(jobs))

    def purge_due(self) -> bool:
        last = self._last_purge
        return last is None or self.settings.clock() - last >= PURGE_INTERVAL

    def purge(self) -> None:
        """Forgets delivery history past its retention (at most hourly). A job
        (flint.common.jobs): a purge that fails is noted, retried with backoff
        and never ends the claimer that calls it."""
        now = self.settings.clock()
        self._last_purge = now

        def purge(_: Item) -> int:
            with self.db.unit_of_work() as uow:
                purged = history.purge_expired(uow, now)
                uow.commit()
            return purged

        # One bulk item: the purge is by age across endpoints, not per tenant.
        result = run_job(self.db, HISTORY_JOB, now, lambda _: [Item(HISTORY_JOB)], purge)
        if result.done:
            log_event(logger, "webhook_history_purged", deliveries=result.done)


class _Ready:
    """Claimed jobs waiting for a sender, by endpoint. A sender takes the
    oldest job of the next endpoint in turn that has fewer than `per_endpoint`
    attempts in flight, so a slow or hanging endpoint holds that many of the
    worker's slots at most, and a backlog of one endpoint never queues ahead
    of another endpoint's deliveries."""

    def __init__(self, per_endpoint: int) -> None:
        self.per_endpoint = max(1, per_endpoint)
        # Endpoints in turn (the next to be served first) and their jobs, oldest first.
        self._queues: OrderedDict[str, deque[tuple[float, Job]]] = OrderedDict()
        self._in_flight: Counter[str] = Counter()
        self._size = 0
        self._closed = False
        # Senders waiting for a job they may start.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def startable(self) -> int:
        """Queued jobs of endpoints below their cap: what senders can start
        soon. Jobs waiting behind a busy endpoint do not count, so they never
        stop the worker from claiming other endpoints' deliveries."""
        return sum(
            len(jobs)
            for endpoint_id, jobs in self._queues.items()
            if self._in_flight[endpoint_id] < self.per_endpoint
        )

    def holding(self, at_least: int) -> list[str]:
        """Endpoints with at least this many jobs here, queued or in flight."""
        return [
            endpoint_id
            for endpoint_id in self._queues.keys() | self._in_flight.keys()
            if len(self._queues.get(endpoint_id, ())) + self._in_flight[endpoint_id] >= at_least
        ]

    def put(self, claimed_at: float, job: Job) -> None:
        self._queues.setdefault(job.endpoint_id, deque()).append((claimed_at, job))
        self._size += 1
        self._wake_one()

    def _take(self) -> tuple[float, Job] | None:
        for endpoint_id, jobs in self._queues.items():
            if self._in_flight[endpoint_id] < self.per_endpoint:
                queued = jobs.popleft()
                if jobs:
                    self._queues.move_to_end(endpoint_id)  # its next job waits its turn
                else:
                    del self._queues[endpoint_id]
                self._in_flight[endpoint_id] += 1
                self._size -= 1
                return queued
        return None

    async def get(self) -> tuple[float, Job] | None:
        """The next job to send (counted in flight until `done`), or None once closed."""
        while True:
            if self._closed:
                return None
            queued = self._take()
            if queued is not None:
                return queued
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def done(self, job: Job) -> None:
        self._in_flight[job.endpoint_id] -= 1
        if self._in_flight[job.endpoint_id] <= 0:
            del self._in_flight[job.endpoint_id]
        self._wake_one()

    def drop(self, endpoint_id: str) -> list[Job]:
        """Takes the endpoint's waiting jobs out (to give them back)."""
        jobs = self._queues.pop(endpoint_id, deque())
        self._size -= len(jobs)
        return [job for _, job in jobs]

    def close(self) -> list[Job]:
        """Stops the senders once their attempts end; returns the jobs that waited."""
        self._closed = True
        waiting = [job for jobs in self._queues.values() for _, job in jobs]
        self._queues.clear()
        self._size = 0
        while self._waiters:
            self._wake_one()
        return waiting

    def _wake_one(self) -> None:
        """A new job, or a freed slot, lets at most one more sender start."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # (a cancelled sender's is)
                waiter.set_result(None)
                return


class _Loop:
    """One run of a worker: the claimer, the senders, the recorder and the
    wake-ups, on one event loop.

    A claim leases a batch of due deliveries into a local queue, which
    `concurrency` senders work through over keep-alive connections, endpoint
    by endpoint in turn and at most `endpoint_concurrency` to one endpoint at
    once (so a hanging endpoint never takes every slot); recording
    follows in batches. A claim costs a few round trips whatever its size, so
    a busy worker claims ahead of its senders, as much as they will send well
    within the lease (judged from the recent attempt latency). Every job is
    checked again before it is sent: one that waited so long that the attempt
    could outlast its lease is given back instead, so no delivery is ever sent
    by two workers at once."""

    def __init__(self, worker: Worker, stop: threading.Event) -> None:
        self.worker = worker
        self.stop = stop
        settings = worker.settings
        self.wake = asyncio.Event()
        self.to_record = asyncio.Event()
        # Claimed jobs (with when they were claimed), by endpoint.
        self.ready = _Ready(settings.endpoint_concurrency)
        self.finished: asyncio.Queue[tuple[Job, Result]] = asyncio.Queue()
        self.unsent: list[Job] = []
        # Endpoints whose failed attempt is not stored yet (so not yet paused in
        # the database): not claimed meanwhile.
        self.failing: set[str] = set()
        # When each endpoint last failed here (monotonic): what a claim that
        # started before brings for it is given back, not sent.
        self.failed_at: dict[str, float] = {}
        # Claimed and not yet recorded (or given back).
        self.unrecorded = 0
        # How long a claimed job may wait in the queue, so that its attempt
        # still ends (and is recorded) within the lease.
        self.queue_budget = (
            settings.lease.total_seconds() - settings.total_timeout - RECORD_MARGIN_SECONDS
        )
        # With a lease too short for any wait, claims take only free slots.
        self.prefetch = self.queue_budget > 0
        # Seconds per attempt, smoothed; pessimistic until attempts are seen.
        self.latency = settings.total_timeout
        self.sending = 0
        # The claimer is woken when an attempt ends with this many or fewer queued.
        self.low_water = worker.concurrency

    def _queue_target(self) -> int:
        """How many claimed jobs to keep ready: what the senders start within
        half the queue budget at the recent latency (free slots only, when
        jobs may not wait)."""
        concurrency = self.worker.concurrency
        if not self.prefetch:
            return concurrency - self.sending
        per_slot = int(self.queue_budget / 2 / max(self.latency, MIN_LATENCY_SECONDS))
        return min(CLAIM_MAX, concurrency * max(1, per_slot))

    def _endpoint_target(self) -> int:
        """How many jobs of one endpoint to hold at most: its share of the
        queue target, so one worker does not take all of a backlog that it
        sends only `endpoint_concurrency` at a time."""
        per_endpoint = self.worker.settings.endpoint_concurrency
        if not self.prefetch:
            return per_endpoint
        per_slot = int(self.queue_budget / 2 / max(self.latency, MIN_LATENCY_SECONDS))
        return per_endpoint * max(1, per_slot)

    async def run(self) -> None:
        worker = self.worker
        watchers = [
            asyncio.create_task(self._on_stop()),
            asyncio.create_task(self._watch_sqlite() if worker.db.is_sqlite else self._listen()),
        ]
        recorder = asyncio.create_task(self._recorder())
        async with Sender(worker.settings, connections=worker.concurrency) as sender:
            senders = [asyncio.create_task(self._sender(sender)) for _ in range(worker.concurrency)]
            await self._claimer()
            # Stopping: what is being sent finishes; what waits is given back.
            self.unsent.extend(self.ready.close())
            self.to_record.set()
            await asyncio.gather(*senders)
        while self.unrecorded:
            await self._sleep(None)
        # Awaited, so the LISTEN connection is closed, not left to the collector.
        for task in (recorder, *watchers):
            task.cancel()
        await asyncio.gather(recorder, *watchers, return_exceptions=True)

    async def _claimer(self) -> None:
        worker = self.worker
        while not self.stop.is_set():
            target = self._queue_target()
            queued = self.ready.startable()
            size = min(target - queued, UNRECORDED_MAX - self.unrecorded)
            # Claim again once the queue is down to half its target, so one
            # claim leases many and the senders never wait for it.
            self.low_water = target // 2 if self.prefetch else target
            if size < max(1, target // 2) and (queued or self.sending):
                await self._sleep(None)  # until attempts end
                continue
            jobs: list[Job] = []
            # Before the claim: its leases start while it runs.
            claimed_at = time.monotonic()
            try:
                if size > 0:
                    held = self.ready.holding(self._endpoint_target())
                    jobs = await asyncio.to_thread(claim, worker.db, worker.settings, size, held)
                self.unrecorded += len(jobs)
                for job in jobs:
                    self.ready.put(claimed_at, job)
                if worker.purge_due():
                    await asyncio.to_thread(worker.purge)
            except OperationalError as error:
                log_event(
                    logger, "webhook_claim_failed", level=logging.WARNING, error=str(error.orig)
                )
            if len(jobs) < size or size <= 0:
                # Nothing more is due now (or the recorder is behind): until a
                # wake-up, or the next poll.
                await self._sleep(worker.poll_seconds)

    async def _sleep(self, timeout: float | None) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()
        self.wake.clear()

    async def _sender(self, sender: Sender) -> None:
        while True:
            queued = await self.ready.get()
            if queued is None:
                return
            claimed_at, job = queued
            if self.prefetch and time.monotonic() - claimed_at > self.queue_budget:
                self.ready.done(job)
                self.unsent.append(job)  # its attempt could outlast the lease
                self.to_record.set()
                continue
            self.sending += 1
            try:
                result = await sender.send(job)
            finally:
                self.sending -= 1
                self.ready.done(job)
            self.latency += LATENCY_SMOOTHING * (result.latency_ms / 1000 - self.latency)
            self.finished.put_nowait((job, result))
            if not result.succeeded and job.origin != "test":
                # The endpoint's breaker opens when this is recorded: what waits
                # for it here is given back rather than sent into the failure.
                self.failing.add(job.endpoint_id)
                self.failed_at[job.endpoint_id] = time.monotonic()
                self.unsent.extend(self.ready.drop(job.endpoint_id))
            self.to_record.set()
            if self.ready.startable() <= self.low_water:
                self.wake.set()  # time to claim again

    async def _recorder(self) -> None:
        """Stores what finished since the last batch, while the next ones send,
        and gives back what waited too long to be sent."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.finished.empty():
                await self._record_finished(loop)
            # Given back after what finished is stored: a failure stored first
            # pauses its endpoint, so its given-back deliveries are not claimed
            # again at once.
            if self.unsent:
                unsent, self.unsent = self.unsent, []
                try:
                    await asyncio.to_thread(self.worker._release, unsent)
                finally:
                    self.unrecorded -= len(unsent)
                    self.wake.set()
            if self.finished.empty() and not self.unsent:
                await self.to_record.wait()  # until something finishes or is given back
                self.to_record.clear()

    async def _record_finished(self, loop: asyncio.AbstractEventLoop) -> None:
        done: list[tuple[Job, Result]] = []
        # A moment to gather more: each transaction costs about as much as
        # the rows in it, so a busy worker stores many at a time.
        gather_until = loop.time() + RECORD_GATHER_SECONDS
        while True:
            while len(done) < RECORD_BATCH and not self.finished.empty():
                done.append(self.finished.get_nowait())
            if len(done) >= self.worker.concurrency or loop.time() >= gather_until:
                break
            if self.ready.empty() and len(done) >= self.unrecorded - len(self.unsent):
                break  # nothing more is coming
            await asyncio.sleep(RECORD_GATHER_TICK)
        try:
            await asyncio.to_thread(self.worker._record, done)
        finally:
            self.unrecorded -= len(done)
            # Stored: the database pauses the endpoints that failed from now on.
            self.failing.difference_update(
                job.endpoint_id for job, result in done if not result.succeeded
            )
            # (No claim runs for as long as a lease: older failures cannot matter.)
            forget = time.monotonic() - self.worker.settings.lease.total_seconds()
            for endpoint_id, at in list(self.failed_at.items()):
                if at < forget:
                    del self.failed_at[endpoint_id]
            self.wake.set()

    async def _on_stop(self) -> None:
        await asyncio.to_thread(self.stop.wait)
        self.wake.set()

    async def _listen(self) -> None:
        """PostgreSQL: the sequencer's NOTIFY after each fan-out. Only a wake-up:
        the claim reads what is due, so a missed one costs one poll interval."""
        url = self.worker.db.engine.url.set(drivername="postgresql")
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url.render_as_string(hide_password=False), autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.wake.set()  # anything committed before LISTEN took effect
                    async for _notice in connection.notifies():
                        self.wake.set()
            except psycopg.Error as error:
                log_event(logger, "webhook_listen_failed", level=logging.WARNING, error=str(error))
                await asyncio.sleep(1)

    async def _watch_sqlite(self) -> None:
        """SQLite: every commit writes the write-ahead log, so a change of its
        size or time is the wake-up (one stat call per tick, no query)."""
        path = f"{self.worker.db.engine.url.database}-wal"
        seen: tuple[int, int] | None = None
        while True:
            try:
                stat = os.stat(path)
                now = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                now = (0, 0)
            if now != seen:  # the first look too: anything committed before it
                self.wake.set()
            seen = now
            await asyncio.sleep(SQLITE_WATCH_SECONDS)
