"""Webhook resources as the API shows them (protobuf), and the endpoint JSON that
events about an endpoint carry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.server.convert import ENVIRONMENT_ENUMS, timestamp
from flint.webhooks.models import (
    WebhookAttemptRecord,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from flint.webhooks.v1 import webhooks_service_pb2 as pb

if TYPE_CHECKING:
    from flint.webhooks.service import EndpointView, Missed

ENDPOINT_STATUSES: dict[str, pb.WebhookEndpointStatus.ValueType] = {
    "enabled": pb.WEBHOOK_ENDPOINT_STATUS_ENABLED,
    "disabled": pb.WEBHOOK_ENDPOINT_STATUS_DISABLED,
}
ENDPOINT_STATUS_NAMES = {value: name for name, value in ENDPOINT_STATUSES.items()}
DISABLED_REASONS: dict[str, pb.WebhookEndpointDisabledReason.ValueType] = {
    "": pb.WEBHOOK_ENDPOINT_DISABLED_REASON_UNSPECIFIED,
    "manual": pb.WEBHOOK_ENDPOINT_DISABLED_REASON_MANUAL,
    "failing": pb.WEBHOOK_ENDPOINT_DISABLED_REASON_FAILING,
    "gone": pb.WEBHOOK_ENDPOINT_DISABLED_REASON_GONE,
}
DELIVERY_STATUSES: dict[str, pb.WebhookDeliveryStatus.ValueType] = {
    "pending": pb.WEBHOOK_DELIVERY_STATUS_PENDING,
    "succeeded": pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED,
    "failed": pb.WEBHOOK_DELIVERY_STATUS_FAILED,
    "skipped": pb.WEBHOOK_DELIVERY_STATUS_SKIPPED,
}
DELIVERY_STATUS_NAMES = {value: name for name, value in DELIVERY_STATUSES.items()}
ORIGINS: dict[str, pb.WebhookDeliveryOrigin.ValueType] = {
    "event": pb.WEBHOOK_DELIVERY_ORIGIN_EVENT,
    "replay": pb.WEBHOOK_DELIVERY_ORIGIN_REPLAY,
    "test": pb.WEBHOOK_DELIVERY_ORIGIN_TEST,
}
OUTCOMES: dict[str, pb.WebhookAttemptOutcome.ValueType] = {
    "in_progress": pb.WEBHOOK_ATTEMPT_OUTCOME_IN_PROGRESS,
    "succeeded": pb.WEBHOOK_ATTEMPT_OUTCOME_SUCCEEDED,
    "failed": pb.WEBHOOK_ATTEMPT_OUTCOME_FAILED,
    "lost": pb.WEBHOOK_ATTEMPT_OUTCOME_LOST,
}


def _missed_pb(missed: Missed | None) -> pb.MissedDeliveries | None:
    if missed is None:
        return None
    return pb.MissedDeliveries(
        count=missed.count, start_time=timestamp(missed.start), end_time=timestamp(missed.end)
    )


def endpoint_pb(view: EndpointView) -> pb.WebhookEndpoint:
    endpoint: WebhookEndpointRecord = view.endpoint
    return pb.WebhookEndpoint(
        id=endpoint.id,
        app_id=endpoint.app_id,
        url=endpoint.url,
        enabled_events=endpoint.enabled_events,
        environments=[ENVIRONMENT_ENUMS[e] for e in endpoint.environments],
        description=endpoint.description,
        status=ENDPOINT_STATUSES[endpoint.status],
        disabled_reason=DISABLED_REASONS[endpoint.disabled_reason],
        disable_time=timestamp(endpoint.disabled_at),
        failing_since=timestamp(endpoint.failing_since),
        secret=view.secret,
        previous_secret_expire_time=timestamp(view.previous_secret_expires_at),
        missed=_missed_pb(view.missed),
        create_time=timestamp(endpoint.created_at),
        update_time=timestamp(endpoint.updated_at),
    )


def endpoint_json(view: EndpointView) -> dict[str, Any]:
    """The endpoint as the REST API shows it (never with a secret)."""
    message = endpoint_pb(view)
    message.ClearField("secret")
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def delivery_pb(delivery: WebhookDeliveryRecord) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        app_id=delivery.app_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        environment=ENVIRONMENT_ENUMS.get(
            delivery.environment, accounts_pb.ENVIRONMENT_UNSPECIFIED
        ),
        merchant_id=delivery.merchant_id,
        status=DELIVERY_STATUSES[delivery.status],
        origin=ORIGINS[delivery.origin],
        attempt_count=delivery.attempt_count,
        next_attempt_time=timestamp(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        create_time=timestamp(delivery.created_at),
        complete_time=timestamp(delivery.completed_at),
    )


def attempt_pb(attempt: WebhookAttemptRecord) -> pb.WebhookDeliveryAttempt:
    return pb.WebhookDeliveryAttempt(
        delivery_id=attempt.delivery_id,
        attempt_number=attempt.number,
        endpoint_id=attempt.endpoint_id,
        event_id=attempt.event_id,
        url=attempt.url,
        start_time=timestamp(attempt.started_at),
        finish_time=timestamp(attempt.finished_at),
        outcome=OUTCOMES[attempt.outcome],
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        response_body=attempt.response_body,
        error=attempt.error,
    )
