"""`flint worker`: sends due webhook deliveries until stopped. Any number of
workers may run against one database; each claims its own deliveries."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError

from flint.common.db import Database
from flint.common.logs import log_event
from flint.webhooks import history
from flint.webhooks.sender import DeliverySettings, Job, claim, record, send

logger = logging.getLogger("flint.webhooks")

DEFAULT_CONCURRENCY = 8
DEFAULT_POLL_SECONDS = 0.5
PURGE_INTERVAL = timedelta(hours=1)


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
        self.concurrency = max(1, concurrency)
        self.poll_seconds = poll_seconds
        self._last_purge: datetime | None = None

    def deliver(self, job: Job) -> None:
        """Sends one claimed attempt and records it. A failure to record leaves
        the lease to expire, and the delivery is sent again."""
        result = send(job, self.settings)
        try:
            with self.db.unit_of_work() as uow:
                delivery, _ = record(uow, job, result, self.settings)
                status = delivery.status
                uow.commit()
        except Exception as error:  # the lease covers it: retried, never lost
            log_event(
                logger,
                "webhook_record_failed",
                level=logging.WARNING,
                delivery=job.delivery_id,
                error=str(error),
            )
            return
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

    def run_once(self) -> int:
        """Claims and sends one batch, waiting for it; returns how many (tests)."""
        jobs = claim(self.db, self.settings, self.concurrency)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(self.deliver, jobs))
        return len(jobs)

    def _purge(self) -> None:
        now = self.settings.clock()
        if self._last_purge is not None and now - self._last_purge < PURGE_INTERVAL:
            return
        self._last_purge = now
        with self.db.unit_of_work() as uow:
            purged = history.purge_expired(uow, now)
            uow.commit()
        if purged:
            log_event(logger, "webhook_history_purged", deliveries=purged)

    def run(self, stop: threading.Event) -> None:
        """Keeps up to `concurrency` attempts in flight until `stop` is set, then
        lets those finish."""
        in_flight: set[Future[None]] = set()
        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="flint-webhooks"
        ) as pool:
            while not stop.is_set():
                in_flight = {f for f in in_flight if not f.done()}
                free = self.concurrency - len(in_flight)
                jobs: list[Job] = []
                try:
                    if free > 0:
                        jobs = claim(self.db, self.settings, free)
                    self._purge()
                except OperationalError as error:
                    log_event(
                        logger, "webhook_claim_failed", level=logging.WARNING, error=str(error.orig)
                    )
                for job in jobs:
                    in_flight.add(pool.submit(self.deliver, job))
                if jobs and len(jobs) == free:
                    continue
                if in_flight and free == 0:
                    wait(in_flight, timeout=self.poll_seconds, return_when=FIRST_COMPLETED)
                else:
                    stop.wait(self.poll_seconds)
            wait(in_flight)
