"""Sending deliveries: claim, send, record — three steps, and no network call
while a transaction is open.

1. `claim` takes due deliveries in one short transaction and leases them to
   this worker (`lease_until`), writing an in-progress attempt for each — a
   batch at a time, in a few statements. On PostgreSQL concurrent workers skip
   each other's rows (FOR UPDATE SKIP LOCKED); on SQLite the claim is
   serialised (writers BEGIN IMMEDIATE).
2. `Sender.send` POSTs the stored body, signed, to the checked address of the
   endpoint, over keep-alive connections.
3. `record_many` stores a batch of attempts' results in one transaction and
   decides what comes next for each delivery (`record`: one, for test events).

A worker that dies between 1 and 3 loses nothing: once its lease expires the
delivery is due again, its attempt is marked lost, and another worker sends it
again with the same `webhook-id` (at least once, never silently dropped).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import ssl
import time
import typing
from collections import Counter, OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Table,
    TableValuedAlias,
    Text,
    any_,
    bindparam,
    cast,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSON
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
    DEFAULT_OWN_PORTS,
    AddressRefused,
    AddressRules,
    Resolver,
    Target,
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
    skip_pending,
    visible_endpoint,
)

USER_AGENT = "Flint-Webhooks/1"
TEST_EVENT_TYPE = "webhook_endpoint.test"
# Keep-alive clients kept open (one per TLS server name of the endpoints).
MAX_CLIENTS = 64
# How long a host name's addresses, and the check of an endpoint URL's address,
# are reused; every attempt connects only to a checked address.
DNS_CACHE_SECONDS = 5.0
# Endpoint URLs whose checked address is kept (the cache starts over past this).
MAX_TARGETS = 4096
# Answers that are redirects (when they carry a Location): never followed.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
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
    # Attempts to one endpoint in flight at once in a worker: a slow or hanging
    # endpoint holds this many of the worker's slots at most.
    endpoint_concurrency: int = 4
    # Deliveries of one endpoint leased at once, across all workers (sent or
    # waiting in a worker to be sent); one while the endpoint is failing.
    endpoint_leases: int = 64
    # After a failed attempt the endpoint is paused for as long as it has been
    # failing, within these bounds, so a dead endpoint's backlog holds no slot.
    pause_min: timedelta = timedelta(seconds=1)
    pause_max: timedelta = timedelta(minutes=5)
    # The development switch (loopback receivers for test-only endpoints).
    allow_loopback: bool = False
    # Flint's own ports, refused even on loopback.
    own_ports: frozenset[int] = DEFAULT_OWN_PORTS
    resolver: Resolver = system_resolver
    clock: Clock = system_clock
    # Certificates are checked against the endpoint's host name; tests trust their own CA.
    tls_verify: ssl.SSLContext | bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> DeliverySettings:
        rules = AddressRules.from_env()
        base = cls(allow_loopback=rules.allow_loopback, own_ports=rules.own_ports)
        return replace(base, **overrides)

    @property
    def address_rules(self) -> AddressRules:
        return AddressRules(allow_loopback=self.allow_loopback, own_ports=self.own_ports)


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
    # The endpoint receives live events: the development switch does not apply.
    live: bool = True


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


# --- bulk statements ---------------------------------------------------------------
#
# A busy worker claims and records hundreds of deliveries per transaction. On
# PostgreSQL each batch goes as one statement, its ids as one array (`= ANY`)
# and its rows as one JSON parameter (`json_to_recordset`): the text is the same
# for every batch size, so it is parsed and planned once, and no per-row round
# trip or per-value parameter handling is paid. SQLite takes the same rows as IN
# lists and executemany (row by row inside SQLite's C code).


_ATTEMPTS = typing.cast(Table, WebhookAttemptRecord.__table__)
_DELIVERIES = typing.cast(Table, WebhookDeliveryRecord.__table__)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _among(session: Session, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN values`, as one array parameter on PostgreSQL."""
    if _postgres(session):
        matches: ColumnElement[bool] = column == any_(_array(None, list(values), column.type))
        return matches
    inside: ColumnElement[bool] = column.in_(values)
    return inside


def _array(name: str | None, values: list[Any], item: Any) -> Any:
    """One array parameter, cast to the column's type (which also prepares
    each value as the column would, e.g. UTC datetimes)."""
    kind = ARRAY(item)
    return cast(bindparam(name, values, type_=kind), kind)


def _rows(table: Table, rows: Sequence[dict[str, Any]]) -> TableValuedAlias:
    """PostgreSQL: `rows` as a table, sent as one JSON parameter (encoded in C
    and parsed by the server; a parameter per value would be dumped in Python)."""
    encoded = json.dumps(rows, separators=(",", ":"), default=_json_value)
    return (
        func.json_to_recordset(cast(bindparam("rows", encoded, type_=Text), JSON))
        .table_valued(*(column(name, table.c[name].type) for name in rows[0]))
        .render_derived(name="rows", with_types=True)
    )


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        # As the column stores it: UTC, without a zone.
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


def _insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if _postgres(session):
        given = _rows(table, rows)
        session.execute(insert(table).from_select(list(rows[0]), select(given)))
    else:
        session.execute(insert(table), rows)


def _update_rows(
    session: Session, table: Table, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Updates each row found by its `keys` columns with the rest of its values
    (every row has the same columns)."""
    values = [name for name in rows[0] if name not in keys]
    if _postgres(session):
        given = _rows(table, rows)
        session.execute(
            update(table)
            .where(*(table.c[key] == given.c[key] for key in keys))
            .values({name: given.c[name] for name in values})
        )
    else:
        session.connection().execute(
            update(table)
            .where(*(table.c[key] == bindparam(f"key_{key}") for key in keys))
            .values({name: bindparam(f"new_{name}") for name in values}),
            [
                {f"key_{key}": row[key] for key in keys}
                | {f"new_{name}": row[name] for name in values}
                for row in rows
            ],
        )


# --- 1. claim -------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    """A due delivery this transaction holds the row lock of."""

    id: str
    endpoint_id: str
    event_id: str
    install_id: str
    origin: str
    attempt_count: int


def _start_attempts(
    session: Session, due: Sequence[_Due], now: datetime, lease: timedelta
) -> list[Job]:
    """Leases `due` and writes an in-progress attempt for each, in a few
    statements for the whole batch. One lease token covers the batch: it is
    this claim's, and a later claim by anyone writes another."""
    if not due:
        return []
    ids = [d.id for d in due]
    token = secrets.token_hex(16)
    # An attempt still in progress here belonged to a worker whose lease ran out.
    session.execute(
        update(WebhookAttemptRecord)
        .where(
            _among(session, WebhookAttemptRecord.delivery_id, ids),
            WebhookAttemptRecord.outcome == "in_progress",
        )
        .values(outcome="lost", finished_at=now, error=LOST_ATTEMPT)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(WebhookDeliveryRecord)
        .where(_among(session, WebhookDeliveryRecord.id, ids))
        .values(
            attempt_count=WebhookDeliveryRecord.attempt_count + 1,
            lease_until=now + lease,
            lease_token=token,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    urls: dict[str, str] = {}
    live: set[str] = set()
    for endpoint_id, url, environments in session.execute(
        select(
            WebhookEndpointRecord.id, WebhookEndpointRecord.url, WebhookEndpointRecord.environments
        ).where(_among(session, WebhookEndpointRecord.id, {d.endpoint_id for d in due}))
    ):
        urls[endpoint_id] = url
        if "live" in environments:
            live.add(endpoint_id)
    bodies: dict[tuple[str, str], str] = {
        (event_id, install_id): body
        for event_id, install_id, body in session.execute(
            select(
                WebhookPayloadRecord.event_id,
                WebhookPayloadRecord.install_id,
                WebhookPayloadRecord.body,
            ).where(_among(session, WebhookPayloadRecord.event_id, {d.event_id for d in due}))
        )
    }
    signing_secrets = {
        endpoint_id: tuple(active_secrets(session, endpoint_id, now)) for endpoint_id in urls
    }
    _insert_rows(
        session,
        _ATTEMPTS,
        [
            {
                "delivery_id": d.id,
                "number": d.attempt_count + 1,
                "endpoint_id": d.endpoint_id,
                "event_id": d.event_id,
                "url": urls[d.endpoint_id],
                "started_at": now,
                "finished_at": None,
                "outcome": "in_progress",
                "status_code": 0,
                "latency_ms": 0,
                "response_body": "",
                "error": "",
            }
            for d in due
        ],
    )
    return [
        Job(
            delivery_id=d.id,
            number=d.attempt_count + 1,
            lease_token=token,
            endpoint_id=d.endpoint_id,
            url=urls[d.endpoint_id],
            event_id=d.event_id,
            origin=d.origin,
            body=bodies[(d.event_id, d.install_id)].encode(),
            secrets=signing_secrets[d.endpoint_id],
            live=d.endpoint_id in live,
        )
        for d in due
    ]


def _claimable(now: datetime) -> list[ColumnElement[bool]]:
    """A delivery that may be sent now (joined with its endpoint): due, not
    leased, to an endpoint that takes it and is not paused by its breaker."""
    return [
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
        or_(
            WebhookEndpointRecord.paused_until.is_(None),
            WebhookEndpointRecord.paused_until <= now,
        ),
    ]


def claim(
    db: Database, settings: DeliverySettings, limit: int, skip: Collection[str] = ()
) -> list[Job]:
    """Leases up to `limit` due deliveries to the caller, in one transaction,
    fairly across endpoints (none of the endpoints in `skip`: the caller holds
    enough of theirs already).

    No endpoint ever has more than `settings.endpoint_leases` deliveries
    leased at once, across every worker, and a failing endpoint only one (the
    probe of its breaker), so a slow endpoint's backlog never fills the
    workers. The batch takes each endpoint's oldest due deliveries,
    round-robin, the endpoints that waited longest first.

    The cap is counted under the endpoints' row locks (taken in id order, as
    every writer of endpoints and deliveries does), so two workers claiming for
    one endpoint at once take turns and the second counts the first's leases.
    The lock is FOR NO KEY UPDATE: it does not hold up a fan-out adding
    deliveries to the endpoint. On SQLite the whole claim is serialised."""
    now = settings.clock()
    cap = max(1, settings.endpoint_leases)
    with db.unit_of_work() as uow:
        session = uow.session
        others = [~_among(session, WebhookDeliveryRecord.endpoint_id, skip)] if skip else []
        waiting = list(
            session.scalars(
                select(WebhookDeliveryRecord.endpoint_id)
                .join(
                    WebhookEndpointRecord,
                    WebhookEndpointRecord.id == WebhookDeliveryRecord.endpoint_id,
                )
                .where(*_claimable(now), *others)
                .group_by(WebhookDeliveryRecord.endpoint_id)
                .order_by(
                    func.min(WebhookDeliveryRecord.next_attempt_at),
                    WebhookDeliveryRecord.endpoint_id,
                )
                .limit(limit)
            )
        )
        if not waiting:
            return []
        # Failing endpoints get one attempt at a time (the breaker's probe).
        allowed = {
            endpoint_id: 1 if failing_since is not None else cap
            for endpoint_id, failing_since in session.execute(
                select(WebhookEndpointRecord.id, WebhookEndpointRecord.failing_since)
                .where(_among(session, WebhookEndpointRecord.id, waiting))
                .order_by(WebhookEndpointRecord.id)
                .with_for_update(key_share=True)
            )
        }
        leased: dict[str, int] = {
            endpoint_id: count
            for endpoint_id, count in session.execute(
                select(WebhookDeliveryRecord.endpoint_id, func.count())
                .where(
                    _among(session, WebhookDeliveryRecord.endpoint_id, waiting),
                    WebhookDeliveryRecord.status == "pending",
                    WebhookDeliveryRecord.lease_until > now,
                )
                .group_by(WebhookDeliveryRecord.endpoint_id)
            )
        }
        room = {e: n - leased.get(e, 0) for e, n in allowed.items() if n > leased.get(e, 0)}
        if not room:
            return []
        rank = (
            func.row_number()
            .over(
                partition_by=WebhookDeliveryRecord.endpoint_id,
                order_by=(WebhookDeliveryRecord.next_attempt_at, WebhookDeliveryRecord.id),
            )
            .label("rank")
        )
        ranked = (
            select(WebhookDeliveryRecord.id, WebhookDeliveryRecord.endpoint_id, rank)
            .join(
                WebhookEndpointRecord,
                WebhookEndpointRecord.id == WebhookDeliveryRecord.endpoint_id,
            )
            # Checked again under the lock: paused or disabled meanwhile.
            .where(*_claimable(now), _among(session, WebhookDeliveryRecord.endpoint_id, room))
            .subquery()
        )
        turn = {endpoint_id: i for i, endpoint_id in enumerate(waiting)}
        picked = sorted(
            (
                (number, turn[endpoint_id], delivery_id)
                for delivery_id, endpoint_id, number in session.execute(
                    select(ranked.c.id, ranked.c.endpoint_id, ranked.c.rank).where(
                        ranked.c.rank <= max(room.values())
                    )
                )
                if number <= room[endpoint_id]
            )
        )[:limit]
        order = {delivery_id: i for i, (_, _, delivery_id) in enumerate(picked)}
        if not order:
            return []
        due = sorted(
            (
                _Due(*row)
                for row in session.execute(
                    select(
                        WebhookDeliveryRecord.id,
                        WebhookDeliveryRecord.endpoint_id,
                        WebhookDeliveryRecord.event_id,
                        WebhookDeliveryRecord.install_id,
                        WebhookDeliveryRecord.origin,
                        WebhookDeliveryRecord.attempt_count,
                    )
                    .where(
                        _among(session, WebhookDeliveryRecord.id, order),
                        WebhookDeliveryRecord.status == "pending",
                        or_(
                            WebhookDeliveryRecord.lease_until.is_(None),
                            WebhookDeliveryRecord.lease_until <= now,
                        ),
                    )
                    .with_for_update(skip_locked=True)
                )
            ),
            key=lambda d: order[d.id],
        )
        if not due:
            return []
        jobs = _start_attempts(session, due, now, settings.lease)
        uow.commit()
    return jobs


def release(db: Database, jobs: Sequence[Job]) -> None:
    """Gives back claimed deliveries that were not sent: their in-progress
    attempts go (none was made) and the deliveries are due again at once. A
    delivery whose lease another worker took over is left to it."""
    with db.unit_of_work() as uow:
        session = uow.session
        held = {
            delivery_id: token
            for delivery_id, token in session.execute(
                select(WebhookDeliveryRecord.id, WebhookDeliveryRecord.lease_token)
                .where(WebhookDeliveryRecord.id.in_([job.delivery_id for job in jobs]))
                .order_by(WebhookDeliveryRecord.id)
                .with_for_update()
            )
        }
        ours = [job for job in jobs if held.get(job.delivery_id) == job.lease_token]
        for job in ours:
            session.execute(
                delete(WebhookAttemptRecord).where(
                    WebhookAttemptRecord.delivery_id == job.delivery_id,
                    WebhookAttemptRecord.number == job.number,
                    WebhookAttemptRecord.outcome == "in_progress",
                )
            )
            session.execute(
                update(WebhookDeliveryRecord)
                .where(WebhookDeliveryRecord.id == job.delivery_id)
                .values(
                    attempt_count=job.number - 1,
                    lease_until=None,
                    lease_token="",
                )
                .execution_options(synchronize_session=False)
            )
        uow.commit()


# --- 2. send --------------------------------------------------------------------


class Sender:
    """The HTTP side of a worker, for many attempts at once: keep-alive
    sessions (one per TLS server name, so a connection verified for one host
    name never carries another's request) and DNS answers kept for a few
    seconds. Every attempt connects to the address it was checked against (the
    check is redone when the DNS answer it rests on is dropped).

    aiohttp, not httpx: its parser and connection pool are compiled, and a POST
    costs about a tenth of the CPU (the worker's bottleneck on a busy machine)."""

    def __init__(self, settings: DeliverySettings, *, connections: int = 16) -> None:
        self._settings = settings
        self._connections = connections
        # `total` bounds the whole attempt, however slowly the answer trickles in.
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._sessions: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._busy: Counter[str] = Counter()
        self._dns: dict[tuple[str, int], tuple[float, Sequence[str]]] = {}
        # Checked addresses by endpoint URL, as long as their DNS answer is kept.
        self._targets: dict[tuple[str, bool], tuple[float, Target]] = {}

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def _session(self, tls_name: str) -> aiohttp.ClientSession:
        session = self._sessions.pop(tls_name, None)
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._connections, ssl=self._settings.tls_verify
                ),
                timeout=self._timeout,
                # No proxies from the environment: they would bypass the address check.
                trust_env=False,
                # No cookies: one endpoint's answers must not reach another's requests.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        self._sessions[tls_name] = session  # most recently used last
        idle = [name for name in self._sessions if not self._busy[name]]
        for name in idle[: max(0, len(self._sessions) - MAX_CLIENTS)]:
            asyncio.get_running_loop().create_task(self._sessions.pop(name).close())
        return session

    def _resolve(self, host: str, port: int) -> Sequence[str]:
        cached = self._dns.get((host, port))
        if cached is not None and time.monotonic() - cached[0] < DNS_CACHE_SECONDS:
            return cached[1]
        addresses = self._settings.resolver(host, port)
        self._dns[(host, port)] = (time.monotonic(), addresses)
        return addresses

    def _target(self, url: str, live: bool) -> Target:
        return resolve_target(
            url, live=live, rules=self._settings.address_rules, resolver=self._resolve
        )

    async def target(self, url: str, *, live: bool = True) -> Target:
        """The checked address to connect to. Resolving a host name may block, so
        a name not recently resolved is looked up off the event loop."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        now = time.monotonic()
        checked = self._targets.get((url, live))
        if checked is not None and now - checked[0] < DNS_CACHE_SECONDS:
            return checked[1]
        cached = self._dns.get((host, port))
        fresh = cached is not None and now - cached[0] < DNS_CACHE_SECONDS
        if fresh or _is_address(host):
            target = self._target(url, live)
        else:
            target = await asyncio.to_thread(self._target, url, live)
        # The check's answer is kept no longer than the DNS answer it rests on.
        if len(self._targets) >= MAX_TARGETS:
            self._targets.clear()
        self._targets[(url, live)] = (self._dns.get((host, port), (now,))[0], target)
        return target

    async def send(self, job: Job) -> Result:
        """One signed POST. Never raises: every failure becomes the attempt's error."""
        settings = self._settings
        started = settings.clock()
        clock_start = time.monotonic()

        def done(**fields: Any) -> Result:
            latency = int((time.monotonic() - clock_start) * 1000)
            return Result(started, settings.clock(), latency_ms=latency, **fields)

        try:
            target = await self.target(job.url, live=job.live)
        except AddressRefused as error:
            return done(error=f"address refused: {error}"[:500])
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
            **signing.headers(job.secrets, job.event_id, int(started.timestamp()), job.body),
        }
        tls_name = target.sni_hostname or ""
        self._busy[tls_name] += 1
        try:
            session = self._session(tls_name)
            async with session.post(
                target.url,
                data=job.body,
                headers=headers,
                allow_redirects=False,
                server_hostname=target.sni_hostname,
            ) as response:
                kept = b""
                while len(kept) < settings.max_response_bytes:
                    chunk = await response.content.read(settings.max_response_bytes)
                    if not chunk:
                        break
                    kept += chunk
                return done(**_outcome(response, kept, settings))
        except TimeoutError as error:
            return done(error=f"timed out: {type(error).__name__}")
        except (aiohttp.ClientError, OSError) as error:
            return done(error=f"{type(error).__name__}: {error}"[:500])
        finally:
            self._busy[tls_name] -= 1


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _outcome(
    response: aiohttp.ClientResponse, kept: bytes, settings: DeliverySettings
) -> dict[str, Any]:
    status = response.status
    location = response.headers.get("location")
    problem = ""
    if status in REDIRECTS and location is not None:
        problem = f"HTTP {status}: redirects are not followed (Location: {location})"
    elif not 200 <= status < 300:
        problem = f"HTTP {status}"
    return {
        "status_code": status,
        # PostgreSQL text cannot hold NUL: it is stored as any undecodable byte is.
        "response_body": kept[: settings.max_response_bytes]
        .decode("utf-8", "replace")
        .replace("\x00", "\ufffd"),
        "error": problem[:500],
        "retry_after": retry.parse_retry_after(response.headers.get("retry-after")),
    }


def send(job: Job, settings: DeliverySettings) -> Result:
    """One attempt on its own (a test event from the API), outside any event loop."""

    async def once() -> Result:
        async with Sender(settings, connections=1) as sender:
            return await sender.send(job)

    return asyncio.run(once())


# --- 3. record ------------------------------------------------------------------


def record(
    uow: UnitOfWork, job: Job, result: Result, settings: DeliverySettings
) -> tuple[WebhookDeliveryRecord, WebhookAttemptRecord]:
    """Stores one attempt and schedules the delivery's next step (a test event
    sent from the API). Locks the endpoint before the delivery (the order every
    writer of both follows)."""
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
    for name, value in _finished_attempt(job, result).items():
        setattr(attempt, name, value)
    if delivery.lease_token == job.lease_token:
        for name, value in _next_step(endpoint, delivery.status, job, result, settings, now):
            setattr(delivery, name, value)
        if job.origin != "test":
            _track_health(uow, endpoint, result, settings, now)
    return delivery, attempt


def record_many(
    db: Database, done: Sequence[tuple[Job, Result]], settings: DeliverySettings
) -> list[str]:
    """Stores a batch of attempts in one transaction; returns each delivery's
    status after it. Locks the endpoints, then the deliveries, each in id order
    (so two workers recording at once wait for each other, never deadlock)."""
    with db.unit_of_work() as uow:
        session = uow.session
        now = settings.clock()
        endpoints = {
            e.id: e
            for e in session.scalars(
                select(WebhookEndpointRecord)
                .where(
                    _among(session, WebhookEndpointRecord.id, {job.endpoint_id for job, _ in done})
                )
                .order_by(WebhookEndpointRecord.id)
                .with_for_update()
            )
        }
        enabled_before = {e.id for e in endpoints.values() if e.status == "enabled"}
        held = {
            delivery_id: (status, token)
            for delivery_id, status, token in session.execute(
                select(
                    WebhookDeliveryRecord.id,
                    WebhookDeliveryRecord.status,
                    WebhookDeliveryRecord.lease_token,
                )
                .where(
                    _among(session, WebhookDeliveryRecord.id, {job.delivery_id for job, _ in done})
                )
                .order_by(WebhookDeliveryRecord.id)
                .with_for_update()
            )
        }
        attempts: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        statuses: list[str] = []
        for job, result in done:
            attempts.append(
                {"delivery_id": job.delivery_id, "number": job.number}
                | _finished_attempt(job, result)
            )
            status, token = held[job.delivery_id]
            if token == job.lease_token:
                endpoint = endpoints[job.endpoint_id]
                step = dict(_next_step(endpoint, status, job, result, settings, now))
                deliveries.append({"id": job.delivery_id} | step)
                status = step["status"]
                held[job.delivery_id] = (status, "")
                if job.origin != "test":
                    _track_health(uow, endpoint, result, settings, now)
            # Otherwise the lease ran out and another worker took the delivery
            # over: this attempt is history, the delivery is theirs.
            statuses.append(status)
        _update_rows(session, _ATTEMPTS, ("delivery_id", "number"), attempts)
        if deliveries:
            _update_rows(session, _DELIVERIES, ("id",), deliveries)
        for endpoint_id in enabled_before:
            if endpoints[endpoint_id].status != "enabled":
                # Disabled by this batch (410, or failing too long): what it left
                # pending is skipped, as if each attempt had been stored alone.
                skip_pending(session, endpoint_id, now, "endpoint disabled")
        uow.commit()
    return statuses


def _finished_attempt(job: Job, result: Result) -> dict[str, Any]:
    return {
        "finished_at": result.finished_at,
        "outcome": "succeeded" if result.succeeded else "failed",
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "response_body": result.response_body,
        "error": result.error,
    }


def _next_step(
    endpoint: WebhookEndpointRecord,
    status: str,
    job: Job,
    result: Result,
    settings: DeliverySettings,
    now: datetime,
) -> list[tuple[str, Any]]:
    """The delivery's new state after an attempt of the worker holding its lease."""
    schedule = () if job.origin == "test" else settings.schedule
    decision = retry.decide(
        retry.Outcome(result.status_code, result.retry_after), job.number, schedule
    )
    next_attempt_at: datetime | None = None
    if decision.verdict == "succeeded":
        status = "succeeded"
    elif status != "pending":
        pass  # skipped while it was being sent: it stays so
    elif decision.verdict == "retry" and (
        endpoint.status != "enabled" or endpoint.deleted_at is not None
    ):
        status = "skipped"  # disabled or deleted while this attempt was out
    elif decision.verdict == "retry" and decision.delay is not None:
        next_attempt_at = now + decision.delay
    else:
        status = "failed"
    return [
        ("status", status),
        ("next_attempt_at", next_attempt_at),
        ("completed_at", None if status == "pending" else now),
        ("lease_until", None),
        ("lease_token", ""),
        ("last_status_code", result.status_code),
        ("last_error", result.error),
        ("updated_at", now),
    ]


def _track_health(
    uow: UnitOfWork,
    endpoint: WebhookEndpointRecord,
    result: Result,
    settings: DeliverySettings,
    now: datetime,
) -> None:
    """One success clears the failing stretch and the breaker; a failure
    pauses the endpoint (its breaker opens) for as long as it has been failing
    (`pause_min` to `pause_max`), so the pauses grow about twofold while it
    keeps failing; 410 Gone, or failing for `disable_after`, disables it."""
    if result.succeeded:
        if endpoint.failing_since is not None:  # (an ORM write costs, even of the same value)
            endpoint.failing_since = None
        if endpoint.paused_until is not None:
            endpoint.paused_until = None
        return
    if endpoint.failing_since is None:
        endpoint.failing_since = result.started_at
    pause = min(max(now - endpoint.failing_since, settings.pause_min), settings.pause_max)
    if endpoint.paused_until is None or endpoint.paused_until < now + pause:
        endpoint.paused_until = now + pause
    if result.status_code == retry.GONE:
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
    [job] = _start_attempts(
        session,
        [_Due(delivery.id, endpoint.id, payload.event_id, "", "test", delivery.attempt_count)],
        now,
        settings.lease,
    )
    return job


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))
