"""`flint worker`: sends due webhook deliveries until stopped. Any number of
workers may run against one database; each claims its own deliveries.

One event loop does the work: it claims due deliveries in batches (one short
transaction leases many), sends them concurrently over keep-alive connections,
and records the finished attempts in batches (one transaction stores many).
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
from datetime import datetime, timedelta

import psycopg
from sqlalchemy.exc import OperationalError

from flint.common.db import Database
from flint.common.logs import log_event
from flint.webhooks import history
from flint.webhooks.sender import DeliverySettings, Job, Result, Sender, claim, record_many

logger = logging.getLogger("flint.webhooks")

DEFAULT_CONCURRENCY = 16
DEFAULT_POLL_SECONDS = 0.5
PURGE_INTERVAL = timedelta(hours=1)
# The sequencer's channel (see flint.events.sequencer): it fires after a fan-out commits.
NOTIFY_CHANNEL = "flint_events"
# How often the SQLite write-ahead log is looked at for a commit (a stat call).
SQLITE_WATCH_SECONDS = 0.02
# Attempts stored in one transaction at most.
RECORD_BATCH = 256
# How long finished attempts wait for others to be stored with (at most).
RECORD_GATHER_SECONDS = 0.05
RECORD_GATHER_TICK = 0.005
# Finished attempts waiting to be stored, at most, per sending slot: when the
# database falls behind, claiming waits for it.
UNRECORDED_PER_SLOT = 4


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
        lets those finish and records them."""
        # Each attempt is logged once, with its outcome (`webhook_attempt`);
        # httpx's own line per request would double the logging work.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        asyncio.run(_Loop(self, stop).run())

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

    def purge_due(self) -> bool:
        last = self._last_purge
        return last is None or self.settings.clock() - last >= PURGE_INTERVAL

    def purge(self) -> None:
        """Forgets delivery history past its retention (at most hourly)."""
        now = self.settings.clock()
        self._last_purge = now
        with self.db.unit_of_work() as uow:
            purged = history.purge_expired(uow, now)
            uow.commit()
        if purged:
            log_event(logger, "webhook_history_purged", deliveries=purged)


class _Loop:
    """One run of a worker: the claim loop, the senders, the recorder and the
    wake-ups, on one event loop.

    A claimed attempt is sent at once (its lease only has to cover the attempt
    and its recording, never a wait in a queue), and frees its sending slot as
    soon as the answer is in; recording follows in batches. Claims wait until a
    useful batch of slots is free, so one claim transaction leases many."""

    def __init__(self, worker: Worker, stop: threading.Event) -> None:
        self.worker = worker
        self.stop = stop
        self.wake = asyncio.Event()
        self.finished: asyncio.Queue[tuple[Job, Result]] = asyncio.Queue()
        self.sending = 0
        # Sent or being sent, and not yet recorded.
        self.unrecorded = 0

    def _free(self) -> int:
        concurrency = self.worker.concurrency
        return min(concurrency - self.sending, UNRECORDED_PER_SLOT * concurrency - self.unrecorded)

    async def run(self) -> None:
        worker = self.worker
        watchers = [
            asyncio.create_task(self._on_stop()),
            asyncio.create_task(self._watch_sqlite() if worker.db.is_sqlite else self._listen()),
        ]
        recorder = asyncio.create_task(self._recorder())
        tasks: set[asyncio.Task[None]] = set()
        batch = max(1, worker.concurrency // 2)
        async with Sender(worker.settings, connections=worker.concurrency) as sender:
            while not self.stop.is_set():
                free = self._free()
                if free < batch and self.sending:
                    await self._sleep(None)  # a slot frees up when an attempt ends
                    continue
                jobs: list[Job] = []
                try:
                    if free > 0:
                        jobs = await asyncio.to_thread(claim, worker.db, worker.settings, free)
                    if worker.purge_due():
                        await asyncio.to_thread(worker.purge)
                except OperationalError as error:
                    log_event(
                        logger, "webhook_claim_failed", level=logging.WARNING, error=str(error.orig)
                    )
                self.sending += len(jobs)
                self.unrecorded += len(jobs)
                for job in jobs:
                    task = asyncio.create_task(self._send(sender, job))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if not jobs or len(jobs) < free:
                    # Nothing more is due now: until a wake-up, or the next poll.
                    await self._sleep(worker.poll_seconds)
            if tasks:
                await asyncio.wait(tasks)
        while self.unrecorded:
            await self._sleep(None)
        # Awaited, so the LISTEN connection is closed, not left to the collector.
        for task in (recorder, *watchers):
            task.cancel()
        await asyncio.gather(recorder, *watchers, return_exceptions=True)

    async def _sleep(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)
        self.wake.clear()

    async def _send(self, sender: Sender, job: Job) -> None:
        result = await sender.send(job)
        self.sending -= 1
        self.finished.put_nowait((job, result))
        self.wake.set()

    async def _recorder(self) -> None:
        """Stores what finished since the last batch, while the next ones send."""
        loop = asyncio.get_running_loop()
        while True:
            done = [await self.finished.get()]
            # A moment to gather more: each transaction costs about as much as
            # the rows in it, so a busy worker stores a slot's worth at a time.
            gather_until = loop.time() + RECORD_GATHER_SECONDS
            while True:
                while len(done) < RECORD_BATCH and not self.finished.empty():
                    done.append(self.finished.get_nowait())
                if len(done) >= self.worker.concurrency or loop.time() >= gather_until:
                    break
                if not self.sending:
                    break  # nothing more is coming
                await asyncio.sleep(RECORD_GATHER_TICK)
            try:
                await asyncio.to_thread(self.worker._record, done)
            finally:
                self.unrecorded -= len(done)
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
