"""Sending deliveries: claim, send, record — three steps, and no network call
while a transaction is open.

1. `claim` takes due deliveries in one short transaction and leases them to
   this worker (`lease_until`), writing an in-progress attempt for each. On
   PostgreSQL concurrent workers skip each other's rows (FOR UPDATE SKIP
   LOCKED); on SQLite the claim is serialised (writers BEGIN IMMEDIATE).
2. `send` POSTs the stored body, signed, to the checked address of the endpoint.
3. `record` stores the attempt's result and decides what comes next.

A worker that dies between 1 and 3 loses nothing: once its lease expires the
delivery is due again, its attempt is marked lost, and another worker sends it
again with the same `webhook-id` (at least once, never silently dropped).
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from flint.common.auth import Principal
from flint.common.clock import Clock, system_clock
from flint.common.db import Database, UnitOfWork
from flint.common.errors import invalid_argument
from flint.common.events import EventRecord
from flint.common.ids import new_id
from flint.events.presenter import Reader, event_json
from flint.webhooks import presenter, retry, signing
from flint.webhooks.addresses import (
    AddressRefused,
    Resolver,
    loopback_allowed_by_env,
    resolve_target,
    system_resolver,
)
from flint.webhooks.fanout import ENDPOINT_OBJECT, new_delivery
from flint.webhooks.models import (
    WebhookAttemptRecord,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
    WebhookPayloadRecord,
)
from flint.webhooks.service import (
    EndpointView,
    active_secrets,
    disable_endpoint,
    visible_endpoint,
)

USER_AGENT = "Flint-Webhooks/1"
TEST_EVENT_TYPE = "webhook_endpoint.test"
LOST_ATTEMPT = "the worker stopped before recording a result; retried after its lease expired"


@dataclass(frozen=True)
class DeliverySettings:
    """Everything a test may want to change: the schedule, the timeouts, the clock."""

    schedule: Sequence[timedelta] = retry.SCHEDULE
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    # The whole attempt, however slowly the receiver trickles its answer.
    total_timeout: float = 30.0
    # Longer than an attempt can take, so a live worker never loses its lease.
    lease: timedelta = timedelta(seconds=60)
    # The first bytes of the response kept with the attempt.
    max_response_bytes: int = 1024
    # An endpoint failing for this long without one success is disabled.
    disable_after: timedelta = timedelta(days=5)
    allow_loopback: bool = False
    resolver: Resolver = system_resolver
    clock: Clock = system_clock
    # Certificates are checked against the endpoint's host name; tests trust their own CA.
    tls_verify: ssl.SSLContext | bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> DeliverySettings:
        return replace(cls(allow_loopback=loopback_allowed_by_env()), **overrides)


@dataclass(frozen=True)
class Job:
    """One attempt a worker holds the lease for."""

    delivery_id: str
    number: int
    lease_token: str
    endpoint_id: str
    url: str
    event_id: str
    origin: str
    body: bytes
    secrets: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class Result:
    started_at: datetime
    finished_at: datetime
    status_code: int = 0
    latency_ms: int = 0
    response_body: str = ""
    error: str = ""
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


# --- 1. claim -------------------------------------------------------------------


def _start_attempt(
    session: Session, delivery: WebhookDeliveryRecord, now: datetime, lease: timedelta
) -> Job:
    # An attempt still in progress here belonged to a worker whose lease ran out.
    session.execute(
        update(WebhookAttemptRecord)
        .where(
            WebhookAttemptRecord.delivery_id == delivery.id,
            WebhookAttemptRecord.outcome == "in_progress",
        )
        .values(outcome="lost", finished_at=now, error=LOST_ATTEMPT)
    )
    endpoint = session.get_one(WebhookEndpointRecord, delivery.endpoint_id)
    payload = session.get_one(WebhookPayloadRecord, (delivery.event_id, delivery.install_id))
    delivery.attempt_count += 1
    delivery.lease_until = now + lease
    delivery.lease_token = secrets.token_hex(16)
    delivery.updated_at = now
    session.add(
        WebhookAttemptRecord(
            delivery_id=delivery.id,
            number=delivery.attempt_count,
            endpoint_id=endpoint.id,
            event_id=delivery.event_id,
            url=endpoint.url,
            started_at=now,
            finished_at=None,
            outcome="in_progress",
            status_code=0,
            latency_ms=0,
            response_body="",
            error="",
        )
    )
    return Job(
        delivery_id=delivery.id,
        number=delivery.attempt_count,
        lease_token=delivery.lease_token,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        event_id=delivery.event_id,
        origin=delivery.origin,
        body=payload.body.encode(),
        secrets=tuple(active_secrets(session, endpoint.id, now)),
    )


def claim(db: Database, settings: DeliverySettings, limit: int) -> list[Job]:
    """Leases up to `limit` due deliveries to the caller."""
    now = settings.clock()
    with db.unit_of_work() as uow:
        session = uow.session
        due = list(
            session.scalars(
                select(WebhookDeliveryRecord)
                .join(
                    WebhookEndpointRecord,
                    WebhookEndpointRecord.id == WebhookDeliveryRecord.endpoint_id,
                )
                .where(
                    WebhookDeliveryRecord.status == "pending",
                    WebhookDeliveryRecord.next_attempt_at <= now,
                    or_(
                        WebhookDeliveryRecord.lease_until.is_(None),
                        WebhookDeliveryRecord.lease_until <= now,
                    ),
                    WebhookEndpointRecord.deleted_at.is_(None),
                    or_(
                        WebhookEndpointRecord.status == "enabled",
                        WebhookDeliveryRecord.origin == "test",
                    ),
                )
                .order_by(WebhookDeliveryRecord.next_attempt_at, WebhookDeliveryRecord.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=WebhookDeliveryRecord)
            )
        )
        jobs = [_start_attempt(session, delivery, now, settings.lease) for delivery in due]
        uow.commit()
    return jobs


# --- 2. send --------------------------------------------------------------------


def send(job: Job, settings: DeliverySettings) -> Result:
    """One signed POST. Never raises: every failure becomes the attempt's error."""
    started = settings.clock()
    clock_start = time.monotonic()

    def done(**fields: Any) -> Result:
        latency = int((time.monotonic() - clock_start) * 1000)
        return Result(started, settings.clock(), latency_ms=latency, **fields)

    try:
        target = resolve_target(
            job.url, allow_loopback=settings.allow_loopback, resolver=settings.resolver
        )
    except AddressRefused as error:
        return done(error=f"address refused: {error}"[:500])
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header,
        **signing.headers(job.secrets, job.event_id, int(started.timestamp()), job.body),
    }
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else {}
    try:
        # No proxies from the environment: they would bypass the address check.
        with (
            httpx.Client(
                timeout=timeout,
                follow_redirects=False,
                trust_env=False,
                verify=settings.tls_verify,
            ) as client,
            client.stream(
                "POST", target.url, content=job.body, headers=headers, extensions=extensions
            ) as response,
        ):
            kept = bytearray()
            for chunk in response.iter_bytes():
                kept += chunk
                if len(kept) >= settings.max_response_bytes:
                    break
                if time.monotonic() - clock_start > settings.total_timeout:
                    break
            status = response.status_code
            problem = ""
            if response.is_redirect:
                location = response.headers.get("location", "")
                problem = f"HTTP {status}: redirects are not followed (Location: {location})"
            elif not 200 <= status < 300:
                problem = f"HTTP {status}"
            return done(
                status_code=status,
                response_body=bytes(kept[: settings.max_response_bytes]).decode("utf-8", "replace"),
                error=problem[:500],
                retry_after=retry.parse_retry_after(response.headers.get("retry-after")),
            )
    except httpx.TimeoutException as error:
        return done(error=f"timed out: {type(error).__name__}")
    except httpx.HTTPError as error:
        return done(error=f"{type(error).__name__}: {error}"[:500])


# --- 3. record ------------------------------------------------------------------


def record(
    uow: UnitOfWork, job: Job, result: Result, settings: DeliverySettings
) -> tuple[WebhookDeliveryRecord, WebhookAttemptRecord]:
    """Stores the attempt and schedules the delivery's next step. Locks the
    endpoint before the delivery (the order every writer of both follows)."""
    session = uow.session
    now = settings.clock()
    endpoint = session.scalars(
        select(WebhookEndpointRecord)
        .where(WebhookEndpointRecord.id == job.endpoint_id)
        .with_for_update()
    ).one()
    delivery = session.scalars(
        select(WebhookDeliveryRecord)
        .where(WebhookDeliveryRecord.id == job.delivery_id)
        .with_for_update()
    ).one()
    attempt = session.get_one(WebhookAttemptRecord, (job.delivery_id, job.number))
    attempt.finished_at = result.finished_at
    attempt.outcome = "succeeded" if result.succeeded else "failed"
    attempt.status_code = result.status_code
    attempt.latency_ms = result.latency_ms
    attempt.response_body = result.response_body
    attempt.error = result.error
    if delivery.lease_token != job.lease_token:
        # The lease ran out and another worker took the delivery over: this
        # attempt is history, the delivery is theirs.
        return delivery, attempt
    delivery.lease_until = None
    delivery.lease_token = ""
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    delivery.updated_at = now
    schedule = () if job.origin == "test" else settings.schedule
    outcome = retry.Outcome(result.status_code, result.retry_after)
    decision = retry.decide(outcome, job.number, schedule)
    if decision.verdict == "succeeded":
        delivery.status = "succeeded"
    elif delivery.status != "pending":
        pass  # skipped while it was being sent: it stays so
    elif decision.verdict == "retry" and (
        endpoint.status != "enabled" or endpoint.deleted_at is not None
    ):
        delivery.status = "skipped"  # disabled or deleted while this attempt was out
    elif decision.verdict == "retry" and decision.delay is not None:
        delivery.next_attempt_at = now + decision.delay
    else:
        delivery.status = "failed"
    if delivery.status != "pending":
        delivery.next_attempt_at = None
        delivery.completed_at = now
    if job.origin != "test":
        _track_health(uow, endpoint, result, decision.verdict, settings, now)
    return delivery, attempt


def _track_health(
    uow: UnitOfWork,
    endpoint: WebhookEndpointRecord,
    result: Result,
    verdict: str,
    settings: DeliverySettings,
    now: datetime,
) -> None:
    """One success clears the failing stretch; 410 Gone, or failing for
    `disable_after`, disables the endpoint."""
    if result.succeeded:
        endpoint.failing_since = None
        return
    if endpoint.failing_since is None:
        endpoint.failing_since = result.started_at
    if verdict == "gone":
        disable_endpoint(uow, endpoint, "gone", now)
    elif now - endpoint.failing_since >= settings.disable_after:
        disable_endpoint(uow, endpoint, "failing", now)


# --- test events ----------------------------------------------------------------


def prepare_test(
    uow: UnitOfWork,
    principal: Principal,
    endpoint_id: str,
    environment: str,
    settings: DeliverySettings,
) -> Job:
    """A `webhook_endpoint.test` delivery, leased to the caller to send at once."""
    session = uow.session
    endpoint = visible_endpoint(session, principal, endpoint_id)
    environment = environment or endpoint.environments[0]
    if environment not in endpoint.environments:
        raise invalid_argument(
            "environment", "ENVIRONMENT_NOT_ENABLED", f"the endpoint does not take {environment}"
        )
    now = settings.clock()
    event = EventRecord(
        id=new_id("evt"),
        merchant_id="",
        environment=environment,
        type=TEST_EVENT_TYPE,
        object_type=ENDPOINT_OBJECT,
        object_id=endpoint.id,
        object_version=endpoint.version,
        data=presenter.endpoint_json(EndpointView(endpoint)),
        created_at=now,
        cursor=None,
    )
    body = event_json(session, event, Reader("", environment))
    body.pop("cursor", None)  # a test event has no place in the event log
    payload = WebhookPayloadRecord(
        event_id=event.id,
        install_id="",
        merchant_id="",
        environment=environment,
        event_type=TEST_EVENT_TYPE,
        body=_compact(body),
        created_at=now,
    )
    session.add(payload)
    session.flush([payload])
    delivery = new_delivery(endpoint, payload, origin="test", now=now)
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.completed_at = None
    delivery.last_error = ""
    session.add(delivery)
    session.flush([delivery])
    return _start_attempt(session, delivery, now, settings.lease)


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))
