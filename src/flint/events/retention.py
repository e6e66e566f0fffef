"""Forgets events no reader can get any more, tenant by tenant, as an upkeep job
(see flint.common.jobs): Stripe-like, events are readable for 30 days, and a
webhook endpoint's delivery history (35 days) still counts its deliveries'
events when replaying, so events are kept as long as that history.

Two rows are never deleted: events not yet sequenced (their cursor is still to
come), and the platform's newest sequenced event, whose cursor the sequencer
numbers on from — without it, a quiet platform's next cursor would start again
below positions readers already hold."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from flint.common.db import Database
from flint.common.events import EventRecord
from flint.common.jobs import Item, JobResult, run_job

JOB = "event_retention"
# As long as webhook delivery history (flint.webhooks.history.RETENTION).
KEEP = timedelta(days=35)
# Rows deleted per tenant per sweep, so one transaction stays short; a tenant
# with more goes on at the next sweep.
BATCH = 10_000


def purge_expired_events(db: Database, now: datetime | None = None) -> JobResult:
    """Deletes each tenant's events older than KEEP, one (merchant, environment)
    per transaction. `done` counts the events deleted."""
    at = now or db.clock()
    cutoff = at - KEEP

    def tenants(waiting: frozenset[str]) -> list[Item]:
        with db.read() as session:
            rows = session.execute(
                select(EventRecord.merchant_id, EventRecord.environment)
                .where(EventRecord.created_at < cutoff, EventRecord.cursor.is_not(None))
                .distinct()
            ).all()
        items = (Item(f"{merchant}|{env}", merchant, env) for merchant, env in rows)
        return [item for item in items if item.id not in waiting]

    def purge(item: Item) -> int:
        head = select(func.max(EventRecord.cursor)).scalar_subquery()
        expired = (
            select(EventRecord.id)
            .where(
                EventRecord.merchant_id == item.merchant_id,
                EventRecord.environment == item.environment,
                EventRecord.created_at < cutoff,
                EventRecord.cursor.is_not(None),
                EventRecord.cursor < head,
            )
            .limit(BATCH)
        )
        with db.unit_of_work() as uow:
            ids = list(uow.session.scalars(expired))
            if ids:
                uow.session.execute(delete(EventRecord).where(EventRecord.id.in_(ids)))
            uow.commit()
        return len(ids)

    return run_job(db, JOB, at, tenants, purge)
