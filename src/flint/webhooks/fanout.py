"""Fan-out: which endpoints receive an event, and the delivery rows for them.

The sequencer calls `fan_out` in the transaction that stamps each event's
cursor, so every committed event is fanned out exactly once (a unique index
refuses a second fan-out delivery of one event to one endpoint).

An app receives a merchant's event when the merchant has an active install of
it whose grant for the event's environment is active and whose scopes let the
app read the object (`app_may_see`: an event recorded for one app, such as
its own charge, reaches only that app). Install lifecycle events (`install.*`) reach
the install's own app whatever its grant, `install.uninstalled` included; after
that, nothing more. App-level events (`webhook_endpoint.*`, no merchant) reach
the app's own enabled endpoints. Of the app's endpoints, those that list the
environment and subscribe to the type get a delivery: pending when enabled,
skipped (recorded, not sent, replayable) when disabled.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.orm import Session

from flint.common.db import UnitOfWork
from flint.common.events import EventRecord
from flint.common.ids import new_id
from flint.events.presenter import Reader, event_json
from flint.events.visibility import app_may_see
from flint.installs.models import GrantRecord, InstallRecord
from flint.webhooks.models import (
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
    WebhookPayloadRecord,
)

INSTALL_OBJECT = "install"
# Events about an app's own webhook endpoints; they belong to no merchant.
ENDPOINT_OBJECT = "webhook_endpoint"


@dataclass(frozen=True)
class Recipient:
    app_id: str
    # The install whose view of the event is sent ("" for app-level events).
    install_id: str


def subscribes(enabled_events: Iterable[str], event_type: str) -> bool:
    """`*`, the exact type, or its family (`order.*`)."""
    for pattern in enabled_events:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def wants(endpoint: WebhookEndpointRecord, event_type: str, environment: str) -> bool:
    """Whether the endpoint's own settings take the event (its app may see it)."""
    return (
        endpoint.deleted_at is None
        and environment in endpoint.environments
        and subscribes(endpoint.enabled_events, event_type)
    )


# Built once: constructing a statement costs more CPU than its round trip, and
# the sequencer runs these for every batch of events.
_IDS: BindParameter[str] = bindparam("ids", expanding=True)
_ACTIVE_GRANTS = (
    select(
        InstallRecord.merchant_id,
        GrantRecord.environment,
        InstallRecord.id,
        InstallRecord.app_id,
        GrantRecord.scopes,
    )
    .join(GrantRecord, GrantRecord.install_id == InstallRecord.id)
    .where(
        InstallRecord.merchant_id.in_(_IDS),
        InstallRecord.status == "active",
        GrantRecord.status == "active",
    )
)
_INSTALLS = select(InstallRecord.id, InstallRecord.app_id, InstallRecord.merchant_id).where(
    InstallRecord.id.in_(_IDS)
)
_ENDPOINT_OWNERS = select(WebhookEndpointRecord.id, WebhookEndpointRecord.app_id).where(
    WebhookEndpointRecord.id.in_(_IDS)
)
_ENDPOINTS_OF_APPS = (
    select(WebhookEndpointRecord)
    .where(WebhookEndpointRecord.app_id.in_(_IDS), WebhookEndpointRecord.deleted_at.is_(None))
    .order_by(WebhookEndpointRecord.id)
)


def recipients(session: Session, events: Sequence[EventRecord]) -> dict[str, list[Recipient]]:
    """The apps (with the install whose view they get) allowed to receive each
    event now. Reads the installs of all the events' merchants in two queries."""
    merchants = {e.merchant_id for e in events if e.merchant_id and e.object_type != INSTALL_OBJECT}
    grants: dict[tuple[str, str], list[tuple[str, str, list[str]]]] = defaultdict(list)
    if merchants:
        rows = session.execute(_ACTIVE_GRANTS, {"ids": list(merchants)})
        for merchant_id, environment, install_id, app_id, scopes in rows:
            grants[(merchant_id, environment)].append((install_id, app_id, scopes))

    install_ids = {e.object_id for e in events if e.object_type == INSTALL_OBJECT}
    installs: dict[str, tuple[str, str]] = {}
    if install_ids:
        for install_id, app_id, merchant_id in session.execute(
            _INSTALLS, {"ids": list(install_ids)}
        ):
            installs[install_id] = (app_id, merchant_id)

    endpoint_ids = {e.object_id for e in events if e.object_type == ENDPOINT_OBJECT}
    endpoint_apps: dict[str, str] = {}
    if endpoint_ids:
        owners = session.execute(_ENDPOINT_OWNERS, {"ids": list(endpoint_ids)})
        endpoint_apps = {endpoint_id: app_id for endpoint_id, app_id in owners}

    result: dict[str, list[Recipient]] = {}
    for event in events:
        found: list[Recipient] = []
        if event.object_type == INSTALL_OBJECT:
            install = installs.get(event.object_id)
            if install is not None and install[1] == event.merchant_id:
                found.append(Recipient(install[0], event.object_id))
        elif event.object_type == ENDPOINT_OBJECT:
            app_id = event.app_id or endpoint_apps.get(event.object_id, "")
            if not event.merchant_id and app_id == endpoint_apps.get(event.object_id):
                found.append(Recipient(app_id, ""))
        elif event.merchant_id:
            for install_id, app_id, scopes in grants.get(
                (event.merchant_id, event.environment), []
            ):
                if app_may_see(app_id, scopes, event):
                    found.append(Recipient(app_id, install_id))
        result[event.id] = found
    return result


def payload_body(session: Session, event: EventRecord, install_id: str) -> str:
    """The event as the Events API shows it to the receiving install, as compact
    JSON: these exact bytes are signed and sent on every attempt."""
    reader = Reader(event.merchant_id, event.environment, install_id)
    return json.dumps(event_json(session, event, reader), separators=(",", ":"))


def ensure_payload(
    session: Session, event: EventRecord, install_id: str, now: datetime
) -> WebhookPayloadRecord:
    payload = session.get(WebhookPayloadRecord, (event.id, install_id))
    if payload is None:
        payload = WebhookPayloadRecord(
            event_id=event.id,
            install_id=install_id,
            merchant_id=event.merchant_id,
            environment=event.environment,
            event_type=event.type,
            body=payload_body(session, event, install_id),
            created_at=now,
        )
        session.add(payload)
        # Before any delivery that refers to it (no ORM relationship orders them).
        session.flush([payload])
    return payload


def new_delivery(
    endpoint: WebhookEndpointRecord,
    payload: WebhookPayloadRecord,
    *,
    origin: str,
    now: datetime,
) -> WebhookDeliveryRecord:
    """A delivery of `payload` to `endpoint`: due now if the endpoint is
    enabled, otherwise recorded as skipped."""
    enabled = endpoint.status == "enabled"
    return WebhookDeliveryRecord(
        id=new_id("del"),
        endpoint_id=endpoint.id,
        app_id=endpoint.app_id,
        partner_id=endpoint.partner_id,
        merchant_id=payload.merchant_id,
        environment=payload.environment,
        event_id=payload.event_id,
        install_id=payload.install_id,
        event_type=payload.event_type,
        origin=origin,
        status="pending" if enabled else "skipped",
        attempt_count=0,
        next_attempt_at=now if enabled else None,
        lease_until=None,
        lease_token="",
        last_status_code=0,
        last_error="" if enabled else "endpoint disabled",
        created_at=now,
        updated_at=now,
        completed_at=None if enabled else now,
    )


def fan_out(uow: UnitOfWork, events: Sequence[EventRecord]) -> None:
    """Creates one delivery per event and matching endpoint. Call it once per
    event, in the transaction that stamps the event's cursor."""
    if not events:
        return
    session = uow.session
    plan = recipients(session, events)
    app_ids = {r.app_id for found in plan.values() for r in found}
    if not app_ids:
        return
    endpoints: dict[str, list[WebhookEndpointRecord]] = defaultdict(list)
    for endpoint in session.scalars(_ENDPOINTS_OF_APPS, {"ids": list(app_ids)}):
        endpoints[endpoint.app_id].append(endpoint)
    for event in events:
        for recipient in plan[event.id]:
            for endpoint in endpoints.get(recipient.app_id, ()):
                if not wants(endpoint, event.type, event.environment):
                    continue
                if event.object_type == ENDPOINT_OBJECT and (
                    endpoint.status != "enabled" or endpoint.id == event.object_id
                ):
                    continue
                payload = ensure_payload(session, event, recipient.install_id, uow.now)
                session.add(new_delivery(endpoint, payload, origin="event", now=uow.now))
