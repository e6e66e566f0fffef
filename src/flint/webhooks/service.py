"""Webhook endpoints of an app: create, read, change, rotate the secret, replay.
Every query is scoped to the calling partner (the operator sees all), so another
partner's endpoint or delivery answers NOT_FOUND."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from flint.apps import service as apps
from flint.apps.models import AppRecord
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, Violations, invalid_argument, not_found
from flint.common.events import EventRecord, record_event
from flint.common.ids import new_id
from flint.common.pagination import Page, fetch_page, next_page_token, parse_page
from flint.common.validation import update_paths
from flint.events import catalog
from flint.installs.models import InstallRecord
from flint.webhooks import presenter, signing
from flint.webhooks.addresses import AddressRules, url_problem
from flint.webhooks.fanout import (
    ENDPOINT_OBJECT,
    ensure_payload,
    new_delivery,
    recipients,
    wants,
)
from flint.webhooks.models import (
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
    WebhookSecretRecord,
)

ENVIRONMENTS = ("test", "live")
STATUSES = ("enabled", "disabled")
MAX_DESCRIPTION_LENGTH = 500
MAX_ENABLED_EVENTS = 100
MAX_EVENT_TYPE_LENGTH = 64
MAX_ENDPOINTS_PER_APP = 16
# How long a rotated-out secret keeps signing, so receivers can switch over.
PREVIOUS_SECRET_TTL = timedelta(hours=24)
REPLAY_LIMIT = 1000
# `*`, a type (`order.paid`) or a family (`order.*`).
_EVENT_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")
MISSED_STATUSES = ("failed", "skipped")


@dataclass(frozen=True)
class EndpointFields:
    """What a partner may set. `status` "" means "leave as is" on update and
    "enabled" on create."""

    url: str = ""
    enabled_events: Sequence[str] = ()
    environments: Sequence[str] = ()
    description: str = ""
    status: str = ""


UPDATABLE = frozenset(f.name for f in fields(EndpointFields))


@dataclass(frozen=True)
class Missed:
    count: int
    start: datetime | None
    end: datetime


@dataclass
class EndpointView:
    endpoint: WebhookEndpointRecord
    # Set only when just created or rotated: shown once.
    secret: str = ""
    previous_secret_expires_at: datetime | None = None
    missed: Missed | None = None


# --- validation -----------------------------------------------------------------


def _validate(values: EndpointFields, violations: Violations, *, rules: AddressRules) -> None:
    prefix = "webhook_endpoint."
    environments = list(values.environments)
    if not environments:
        violations.add(prefix + "environments", "FIELD_REQUIRED", "needs test, live or both")
    for index, environment in enumerate(environments):
        if environment not in ENVIRONMENTS:
            violations.add(
                f"{prefix}environments[{index}]", "UNKNOWN_ENUM_VALUE", "must be test or live"
            )
        elif environments.index(environment) != index:
            violations.add(f"{prefix}environments[{index}]", "DUPLICATE_VALUE", "is listed twice")
    problem = url_problem(values.url, live="live" in environments, rules=rules)
    if problem:
        violations.add(prefix + "url", problem.reason, problem.description)
    events = list(values.enabled_events)
    if not events:
        violations.add(
            prefix + "enabled_events", "FIELD_REQUIRED", "needs event types, or * for all"
        )
    elif len(events) > MAX_ENABLED_EVENTS:
        violations.add(
            prefix + "enabled_events", "TOO_MANY_VALUES", f"must have at most {MAX_ENABLED_EVENTS}"
        )
    for index, pattern in enumerate(events):
        if len(pattern) > MAX_EVENT_TYPE_LENGTH or not _EVENT_PATTERN.match(pattern):
            violations.add(
                f"{prefix}enabled_events[{index}]",
                "INVALID_EVENT_TYPE",
                f"{pattern[:80]!r} is not an event type (order.paid), a family (order.*) or *",
            )
        elif not _in_catalog(pattern):
            # A typo would be saved and then silently match no event.
            violations.add(
                f"{prefix}enabled_events[{index}]",
                "INVALID_EVENT_TYPE",
                f"{pattern!r} matches no type of the event catalog (GET /v1/event_types)",
            )
    if len(values.description) > MAX_DESCRIPTION_LENGTH:
        violations.add(
            prefix + "description",
            "FIELD_TOO_LONG",
            f"must be at most {MAX_DESCRIPTION_LENGTH} characters",
        )
    if values.status and values.status not in STATUSES:
        violations.add(prefix + "status", "UNKNOWN_ENUM_VALUE", "must be enabled or disabled")


def _in_catalog(pattern: str) -> bool:
    if pattern == "*" or pattern in catalog.BY_NAME:
        return True
    family = pattern[:-1] if pattern.endswith(".*") else None
    return family is not None and any(name.startswith(family) for name in catalog.BY_NAME)


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


# --- reading --------------------------------------------------------------------


def _owned(principal: Principal) -> list[object]:
    if principal.kind is PrincipalKind.ADMIN:
        return []
    if principal.kind is PrincipalKind.PARTNER:
        return [WebhookEndpointRecord.partner_id == principal.id]
    return [WebhookEndpointRecord.id.is_(None)]


def visible_endpoint(
    session: Session, principal: Principal, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpointRecord:
    query = select(WebhookEndpointRecord).where(
        WebhookEndpointRecord.id == endpoint_id,
        WebhookEndpointRecord.deleted_at.is_(None),
        *_owned(principal),  # type: ignore[arg-type]
    )
    if lock:
        query = query.with_for_update()
    endpoint = session.scalar(query)
    if endpoint is None:
        raise not_found("webhook endpoint", endpoint_id)
    return endpoint


def _previous_secret_expiry(session: Session, endpoint_id: str, now: datetime) -> datetime | None:
    return session.scalar(
        select(func.max(WebhookSecretRecord.expires_at)).where(
            WebhookSecretRecord.endpoint_id == endpoint_id,
            WebhookSecretRecord.expires_at > now,
        )
    )


def missed_deliveries(session: Session, endpoint: WebhookEndpointRecord, now: datetime) -> Missed:
    """What the endpoint never received: events whose delivery to it failed or
    was skipped (while disabled) and that no later delivery has brought, over
    the delivery history kept. Comparing deliveries with each other, not with
    the endpoint's own timestamps, keeps this exact whatever the clocks of the
    processes that wrote them."""
    later = aliased(WebhookDeliveryRecord)
    delivery = WebhookDeliveryRecord
    row = session.execute(
        select(func.count(func.distinct(delivery.event_id)), func.min(EventRecord.created_at))
        .join(EventRecord, EventRecord.id == delivery.event_id)
        .where(
            delivery.endpoint_id == endpoint.id,
            delivery.status.in_(MISSED_STATUSES),
            delivery.origin != "test",
            ~exists().where(
                later.endpoint_id == endpoint.id,
                later.event_id == delivery.event_id,
                later.status.in_(("succeeded", "pending")),
            ),
        )
    ).one()
    return Missed(int(row[0] or 0), row[1], now)


def _view(session: Session, endpoint: WebhookEndpointRecord, now: datetime) -> EndpointView:
    """The endpoint as Get and List show it (never with a secret)."""
    return EndpointView(
        endpoint,
        previous_secret_expires_at=_previous_secret_expiry(session, endpoint.id, now),
        missed=missed_deliveries(session, endpoint, now) if endpoint.status == "disabled" else None,
    )


def get_endpoint(
    session: Session, principal: Principal, endpoint_id: str, now: datetime
) -> EndpointView:
    return _view(session, visible_endpoint(session, principal, endpoint_id), now)


def list_endpoints(
    session: Session,
    principal: Principal,
    app_id: str,
    *,
    page_size: int,
    page_token: str,
    now: datetime,
) -> tuple[list[EndpointView], str]:
    apps.get_app(session, principal, app_id)
    query = select(WebhookEndpointRecord).where(
        WebhookEndpointRecord.app_id == app_id,
        WebhookEndpointRecord.deleted_at.is_(None),
        *_owned(principal),  # type: ignore[arg-type]
    )
    page = parse_page(session, page_size, page_token, context=f"webhook_endpoints:{app_id}")
    endpoints, token = fetch_page(session, query, WebhookEndpointRecord.id, page)
    return [_view(session, endpoint, now) for endpoint in endpoints], token


def active_secrets(session: Session, endpoint_id: str, now: datetime) -> list[str]:
    """The secrets that sign now, newest first."""
    rows = session.scalars(
        select(WebhookSecretRecord)
        .where(
            WebhookSecretRecord.endpoint_id == endpoint_id,
            or_(WebhookSecretRecord.expires_at.is_(None), WebhookSecretRecord.expires_at > now),
        )
        .order_by(WebhookSecretRecord.version.desc())
    )
    return [signing.decrypt(row.ciphertext, row.endpoint_id, row.version) for row in rows]


# --- changing -------------------------------------------------------------------


def _add_secret(session: Session, endpoint_id: str, version: int, now: datetime) -> str:
    secret = signing.new_secret()
    session.add(
        WebhookSecretRecord(
            endpoint_id=endpoint_id,
            version=version,
            ciphertext=signing.encrypt(secret, endpoint_id, version),
            created_at=now,
            expires_at=None,
        )
    )
    return secret


def create_endpoint(
    uow: UnitOfWork,
    principal: Principal,
    app_id: str,
    values: EndpointFields,
    *,
    rules: AddressRules,
) -> EndpointView:
    values = EndpointFields(
        url=values.url.strip(),
        enabled_events=_unique(values.enabled_events),
        environments=list(values.environments),
        description=values.description,
        status=values.status,
    )
    violations = Violations()
    _validate(values, violations, rules=rules)
    violations.raise_if_any()
    app = apps.get_app(uow.session, principal, app_id)
    # Concurrent creates for one app take turns, so none counts past the limit.
    uow.session.execute(select(AppRecord.id).where(AppRecord.id == app.id).with_for_update())
    count = uow.session.scalar(
        select(func.count()).where(
            WebhookEndpointRecord.app_id == app.id, WebhookEndpointRecord.deleted_at.is_(None)
        )
    )
    if (count or 0) >= MAX_ENDPOINTS_PER_APP:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "TOO_MANY_WEBHOOK_ENDPOINTS",
            f"An app has at most {MAX_ENDPOINTS_PER_APP} webhook endpoints",
            metadata={"limit": str(MAX_ENDPOINTS_PER_APP)},
        )
    status = values.status or "enabled"
    endpoint = WebhookEndpointRecord(
        id=new_id("we"),
        app_id=app.id,
        partner_id=app.partner_id,
        url=values.url,
        description=values.description,
        enabled_events=list(values.enabled_events),
        environments=[e for e in ENVIRONMENTS if e in values.environments],
        status=status,
        disabled_reason="manual" if status == "disabled" else "",
        disabled_at=uow.now if status == "disabled" else None,
        failing_since=None,
        paused_until=None,
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
        deleted_at=None,
    )
    uow.session.add(endpoint)
    uow.session.flush([endpoint])
    secret = _add_secret(uow.session, endpoint.id, 1, uow.now)
    return EndpointView(endpoint, secret=secret)


def skip_pending(session: Session, endpoint_id: str, now: datetime, why: str) -> None:
    """Pending deliveries of an endpoint that stops receiving are not sent; one a
    worker is sending right now finishes its attempt."""
    session.execute(
        update(WebhookDeliveryRecord)
        .where(
            WebhookDeliveryRecord.endpoint_id == endpoint_id,
            WebhookDeliveryRecord.status == "pending",
            or_(
                WebhookDeliveryRecord.lease_until.is_(None),
                WebhookDeliveryRecord.lease_until <= now,
            ),
        )
        .values(
            status="skipped",
            next_attempt_at=None,
            last_error=why,
            completed_at=now,
            updated_at=now,
        )
    )


def disable_endpoint(
    uow: UnitOfWork, endpoint: WebhookEndpointRecord, reason: str, now: datetime
) -> None:
    """Stops deliveries to `endpoint`. When Flint decides it (the endpoint kept
    failing, or answered 410 Gone), a `webhook_endpoint.disabled` event tells
    the app, on its other endpoints that subscribe to it."""
    if endpoint.status == "disabled":
        return
    endpoint.status = "disabled"
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    endpoint.updated_at = now
    endpoint.version += 1
    skip_pending(uow.session, endpoint.id, now, "endpoint disabled")
    if reason == "manual":
        return
    data = presenter.endpoint_json(EndpointView(endpoint))
    for environment in endpoint.environments:
        record_event(
            uow,
            merchant_id="",
            environment=environment,
            type="webhook_endpoint.disabled",
            object_type=ENDPOINT_OBJECT,
            object_id=endpoint.id,
            object_version=endpoint.version,
            data=data,
            app_id=endpoint.app_id,
        )


def update_endpoint(
    uow: UnitOfWork,
    principal: Principal,
    endpoint_id: str,
    values: EndpointFields,
    mask: Sequence[str],
    *,
    rules: AddressRules,
) -> EndpointView:
    """Sets the fields named in `mask` (every non-empty field when empty)."""
    paths = update_paths(
        mask, UPDATABLE, "webhook endpoint", {name: getattr(values, name) for name in UPDATABLE}
    )
    if "status" in paths and not values.status:
        raise invalid_argument("webhook_endpoint.status", "FIELD_REQUIRED", "cannot be cleared")
    endpoint = visible_endpoint(uow.session, principal, endpoint_id, lock=True)
    merged = EndpointFields(
        url=values.url.strip() if "url" in paths else endpoint.url,
        enabled_events=_unique(values.enabled_events)
        if "enabled_events" in paths
        else endpoint.enabled_events,
        environments=list(values.environments)
        if "environments" in paths
        else endpoint.environments,
        description=values.description if "description" in paths else endpoint.description,
        status=values.status if "status" in paths else endpoint.status,
    )
    violations = Violations()
    # Changing environments can make the stored URL unacceptable (live needs https).
    _validate(merged, violations, rules=rules)
    violations.raise_if_any()
    now = uow.now
    missed = None
    if merged.status == "enabled" and endpoint.status == "disabled":
        missed = missed_deliveries(uow.session, endpoint, now)
        endpoint.status = "enabled"
        endpoint.disabled_reason = ""
        endpoint.disabled_at = None
        endpoint.failing_since = None
        endpoint.paused_until = None
    elif merged.status == "disabled" and endpoint.status == "enabled":
        disable_endpoint(uow, endpoint, "manual", now)
    endpoint.url = merged.url
    endpoint.enabled_events = list(merged.enabled_events)
    endpoint.environments = [e for e in ENVIRONMENTS if e in merged.environments]
    endpoint.description = merged.description
    endpoint.updated_at = now
    endpoint.version += 1
    return EndpointView(
        endpoint,
        previous_secret_expires_at=_previous_secret_expiry(uow.session, endpoint.id, now),
        missed=missed,
    )


def delete_endpoint(uow: UnitOfWork, principal: Principal, endpoint_id: str) -> None:
    """Nothing more is sent; the deliveries stay listed under the app, and the
    secrets are destroyed."""
    endpoint = visible_endpoint(uow.session, principal, endpoint_id, lock=True)
    endpoint.deleted_at = uow.now
    endpoint.status = "disabled"
    endpoint.disabled_reason = "manual"
    endpoint.disabled_at = endpoint.disabled_at or uow.now
    endpoint.updated_at = uow.now
    endpoint.version += 1
    skip_pending(uow.session, endpoint.id, uow.now, "endpoint deleted")
    uow.session.query(WebhookSecretRecord).filter(
        WebhookSecretRecord.endpoint_id == endpoint.id
    ).delete()


def rotate_secret(uow: UnitOfWork, principal: Principal, endpoint_id: str) -> EndpointView:
    """A new secret signs from now on; the ones before keep signing for 24 h."""
    endpoint = visible_endpoint(uow.session, principal, endpoint_id, lock=True)
    now = uow.now
    session = uow.session
    session.execute(
        update(WebhookSecretRecord)
        .where(
            WebhookSecretRecord.endpoint_id == endpoint.id,
            or_(
                WebhookSecretRecord.expires_at.is_(None),
                WebhookSecretRecord.expires_at > now + PREVIOUS_SECRET_TTL,
            ),
        )
        .values(expires_at=now + PREVIOUS_SECRET_TTL)
    )
    version = (
        session.scalar(
            select(func.max(WebhookSecretRecord.version)).where(
                WebhookSecretRecord.endpoint_id == endpoint.id
            )
        )
        or 0
    ) + 1
    secret = _add_secret(session, endpoint.id, version, now)
    endpoint.updated_at = now
    endpoint.version += 1
    return EndpointView(
        endpoint,
        secret=secret,
        previous_secret_expires_at=_previous_secret_expiry(session, endpoint.id, now),
    )


# --- replay ---------------------------------------------------------------------


def _require_enabled(endpoint: WebhookEndpointRecord) -> None:
    if endpoint.status != "enabled":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "WEBHOOK_ENDPOINT_DISABLED",
            "The endpoint is disabled: enable it before replaying events to it",
            metadata={"id": endpoint.id},
        )


def _has_pending(session: Session, endpoint_id: str, event_ids: Sequence[str]) -> set[str]:
    if not event_ids:
        return set()
    return set(
        session.scalars(
            select(WebhookDeliveryRecord.event_id).where(
                WebhookDeliveryRecord.endpoint_id == endpoint_id,
                WebhookDeliveryRecord.event_id.in_(event_ids),
                WebhookDeliveryRecord.status == "pending",
            )
        )
    )


def replay_event(
    uow: UnitOfWork, principal: Principal, endpoint_id: str, event_id: str
) -> WebhookDeliveryRecord:
    """Queues the event for the endpoint again, if its app may still see it."""
    if not event_id:
        raise invalid_argument("event_id", "FIELD_REQUIRED", "is required")
    endpoint = visible_endpoint(uow.session, principal, endpoint_id)
    _require_enabled(endpoint)
    event = uow.session.get(EventRecord, event_id)
    allowed = event is not None and any(
        r.app_id == endpoint.app_id for r in recipients(uow.session, [event])[event.id]
    )
    if event is None or not allowed:
        # The same answer whether the event does not exist or the app may not
        # see it (another merchant's, a scope it lacks, an ended install).
        raise not_found("event", event_id)
    if event.cursor is None:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "EVENT_NOT_SEQUENCED",
            "The event is being published; its delivery follows on its own",
            metadata={"event_id": event.id},
        )
    if not wants(endpoint, event.type, event.environment):
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "EVENT_NOT_SUBSCRIBED",
            f"The endpoint does not take {event.type} events in {event.environment}",
            metadata={"event_type": event.type, "environment": event.environment},
        )
    recipient = next(
        r for r in recipients(uow.session, [event])[event.id] if r.app_id == endpoint.app_id
    )
    payload = ensure_payload(uow.session, event, recipient.install_id, uow.now)
    delivery = new_delivery(endpoint, payload, origin="replay", now=uow.now)
    uow.session.add(delivery)
    return delivery


@dataclass(frozen=True)
class ReplayRange:
    start_cursor: str = ""
    end_cursor: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    only_missed: bool = False


def _position(value: str, fld: str) -> int | None:
    """A cursor as delivered (`123.mac`) or its numeric position."""
    if not value:
        return None
    head = value.split(".", 1)[0]
    if not head.isdigit():
        raise invalid_argument(fld, "CURSOR_INVALID", "is not an event cursor")
    return int(head)


def replay_events(
    uow: UnitOfWork,
    principal: Principal,
    endpoint_id: str,
    wanted: ReplayRange,
    *,
    limit: int,
    page_token: str,
) -> tuple[int, int, str]:
    """Queues the events of a range that the endpoint should receive; examines
    at most `limit` events (oldest first). Returns (queued, examined, next token)."""
    if limit < 0:
        raise invalid_argument("limit", "INVALID_LIMIT", "must not be negative")
    limit = min(limit or REPLAY_LIMIT, REPLAY_LIMIT)
    start = _position(wanted.start_cursor, "start_cursor")
    end = _position(wanted.end_cursor, "end_cursor")
    if start is None and wanted.start_time is None:
        raise invalid_argument(
            "start_cursor", "RANGE_REQUIRED", "give start_cursor or start_time (or both)"
        )
    # Swapped ends would otherwise answer "nothing to replay".
    if start is not None and end is not None and end < start:
        raise invalid_argument("end_cursor", "INVALID_RANGE", "must not be before start_cursor")
    if wanted.start_time and wanted.end_time and wanted.end_time <= wanted.start_time:
        raise invalid_argument("end_time", "INVALID_RANGE", "must be after start_time")
    session = uow.session
    endpoint = visible_endpoint(session, principal, endpoint_id)
    _require_enabled(endpoint)
    context = ":".join(
        [
            "replay",
            endpoint.id,
            str(start),
            str(end),
            wanted.start_time.isoformat() if wanted.start_time else "",
            wanted.end_time.isoformat() if wanted.end_time else "",
            str(wanted.only_missed),
        ]
    )
    after = parse_page(session, 0, page_token, context=context).after
    query = _replay_candidates(endpoint, wanted, start, end, int(after) if after else None)
    events = list(session.scalars(query.order_by(EventRecord.cursor).limit(limit)))
    plan = recipients(session, events)
    already = _has_pending(session, endpoint.id, [e.id for e in events])
    queued = 0
    for event in events:
        recipient = next((r for r in plan[event.id] if r.app_id == endpoint.app_id), None)
        if recipient is None or event.id in already:
            continue
        if not wants(endpoint, event.type, event.environment):
            continue
        payload = ensure_payload(session, event, recipient.install_id, uow.now)
        # Due a microsecond apart in cursor order: workers claim by due time, so
        # the replay goes out oldest first (ids made in one millisecond are unordered).
        due = uow.now + timedelta(microseconds=queued)
        session.add(new_delivery(endpoint, payload, origin="replay", now=due))
        queued += 1
    token = ""
    if len(events) == limit:
        token = next_page_token(session, Page(limit, None, context), str(events[-1].cursor))
    return queued, len(events), token


def _replay_candidates(
    endpoint: WebhookEndpointRecord,
    wanted: ReplayRange,
    start: int | None,
    end: int | None,
    after: int | None,
) -> Select[EventRecord]:
    merchants = select(InstallRecord.merchant_id).where(InstallRecord.app_id == endpoint.app_id)
    query = select(EventRecord).where(
        EventRecord.cursor.is_not(None),
        EventRecord.environment.in_(endpoint.environments),
        or_(
            EventRecord.merchant_id.in_(merchants),
            and_(
                EventRecord.merchant_id == "",
                EventRecord.object_type == ENDPOINT_OBJECT,
                EventRecord.app_id == endpoint.app_id,
            ),
        ),
    )
    if start is not None:
        query = query.where(EventRecord.cursor >= start)
    if end is not None:
        query = query.where(EventRecord.cursor <= end)
    if after is not None:
        query = query.where(EventRecord.cursor > after)
    if wanted.start_time is not None:
        query = query.where(EventRecord.created_at >= wanted.start_time)
    if wanted.end_time is not None:
        query = query.where(EventRecord.created_at < wanted.end_time)
    if wanted.only_missed:
        delivery = WebhookDeliveryRecord
        missed = select(delivery.event_id).where(
            delivery.endpoint_id == endpoint.id, delivery.status.in_(MISSED_STATUSES)
        )
        settled = select(delivery.event_id).where(
            delivery.endpoint_id == endpoint.id,
            delivery.status.in_(("succeeded", "pending")),
        )
        query = query.where(EventRecord.id.in_(missed), EventRecord.id.not_in(settled))
    return query
