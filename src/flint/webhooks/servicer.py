"""gRPC WebhooksService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from flint.common.db import Database
from flint.common.errors import invalid_argument
from flint.server import idempotency
from flint.server.convert import ENVIRONMENT_NAMES
from flint.server.rpc import current_principal
from flint.webhooks import history, presenter, sender, service
from flint.webhooks.sender import DeliverySettings
from flint.webhooks.service import EndpointFields, ReplayRange
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from flint.webhooks.v1 import webhooks_service_pb2_grpc as pb_grpc


def _enum_name(names: Mapping[Any, str], value: int, fld: str) -> str:
    if value == 0:
        return ""
    if value not in names:
        raise invalid_argument(fld, "UNKNOWN_ENUM_VALUE", f"{value} is not a known value")
    return names[value]


def endpoint_fields(endpoint: pb.WebhookEndpoint) -> EndpointFields:
    environments = []
    for index, value in enumerate(endpoint.environments):
        name = ENVIRONMENT_NAMES.get(value)
        if name is None:
            raise invalid_argument(
                f"webhook_endpoint.environments[{index}]",
                "UNKNOWN_ENUM_VALUE",
                "must be ENVIRONMENT_TEST or ENVIRONMENT_LIVE",
            )
        environments.append(name)
    return EndpointFields(
        url=endpoint.url,
        enabled_events=list(endpoint.enabled_events),
        environments=environments,
        description=endpoint.description,
        status=_enum_name(
            presenter.ENDPOINT_STATUS_NAMES, endpoint.status, "webhook_endpoint.status"
        ),
    )


def _time(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


class WebhooksServicer(pb_grpc.WebhooksServiceServicer):
    def __init__(self, db: Database, settings: DeliverySettings | None = None) -> None:
        self._db = db
        self._settings = settings or DeliverySettings.from_env(clock=db.clock)

    def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Any
    ) -> pb.WebhookEndpoint:
        with self._db.unit_of_work() as uow:
            view = service.create_endpoint(
                uow,
                current_principal(),
                request.app_id,
                endpoint_fields(request.webhook_endpoint),
                rules=self._settings.address_rules,
            )
            return idempotency.commit(uow, presenter.endpoint_pb(view))

    def GetWebhookEndpoint(
        self, request: pb.GetWebhookEndpointRequest, context: Any
    ) -> pb.WebhookEndpoint:
        with self._db.read() as session:
            view = service.get_endpoint(session, current_principal(), request.id, self._db.clock())
            return presenter.endpoint_pb(view)

    def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Any
    ) -> pb.ListWebhookEndpointsResponse:
        with self._db.read() as session:
            endpoints, token = service.list_endpoints(
                session,
                current_principal(),
                request.app_id,
                page_size=request.page_size,
                page_token=request.page_token,
                now=self._db.clock(),
            )
            return pb.ListWebhookEndpointsResponse(
                webhook_endpoints=[presenter.endpoint_pb(view) for view in endpoints],
                next_page_token=token,
            )

    def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: Any
    ) -> pb.WebhookEndpoint:
        with self._db.unit_of_work() as uow:
            view = service.update_endpoint(
                uow,
                current_principal(),
                request.webhook_endpoint.id,
                endpoint_fields(request.webhook_endpoint),
                list(request.update_mask.paths),
                rules=self._settings.address_rules,
            )
            return idempotency.commit(uow, presenter.endpoint_pb(view))

    def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Any
    ) -> empty_pb2.Empty:
        with self._db.unit_of_work() as uow:
            service.delete_endpoint(uow, current_principal(), request.id)
            return idempotency.commit(uow, empty_pb2.Empty())

    def RotateWebhookEndpointSecret(
        self, request: pb.RotateWebhookEndpointSecretRequest, context: Any
    ) -> pb.WebhookEndpoint:
        with self._db.unit_of_work() as uow:
            view = service.rotate_secret(uow, current_principal(), request.id)
            return idempotency.commit(uow, presenter.endpoint_pb(view))

    def TestWebhookEndpoint(
        self, request: pb.TestWebhookEndpointRequest, context: Any
    ) -> pb.TestWebhookEndpointResponse:
        environment = _enum_name(ENVIRONMENT_NAMES, request.environment, "environment")
        with self._db.unit_of_work() as uow:
            job = sender.prepare_test(
                uow, current_principal(), request.id, environment, self._settings
            )
            # The lease must be committed before the request goes out (no
            # transaction stays open across it); the response is recorded below.
            uow.commit()  # idempotency: completed by idempotency.commit after the send
        result = sender.send(job, self._settings)
        with self._db.unit_of_work() as uow:
            delivery, attempt = sender.record(uow, job, result, self._settings)
            response = pb.TestWebhookEndpointResponse(
                delivery=presenter.delivery_pb(delivery), attempt=presenter.attempt_pb(attempt)
            )
            return idempotency.commit(uow, response)

    def ReplayEvent(self, request: pb.ReplayEventRequest, context: Any) -> pb.WebhookDelivery:
        with self._db.unit_of_work() as uow:
            delivery = service.replay_event(uow, current_principal(), request.id, request.event_id)
            return idempotency.commit(uow, presenter.delivery_pb(delivery))

    def ReplayEvents(
        self, request: pb.ReplayEventsRequest, context: Any
    ) -> pb.ReplayEventsResponse:
        wanted = ReplayRange(
            start_cursor=request.start_cursor,
            end_cursor=request.end_cursor,
            start_time=_time(request.start_time, request.HasField("start_time")),
            end_time=_time(request.end_time, request.HasField("end_time")),
            only_missed=request.only_missed,
        )
        with self._db.unit_of_work() as uow:
            queued, examined, token = service.replay_events(
                uow,
                current_principal(),
                request.id,
                wanted,
                limit=request.limit,
                page_token=request.page_token,
            )
            return idempotency.commit(
                uow,
                pb.ReplayEventsResponse(queued=queued, examined=examined, next_page_token=token),
            )

    def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Any
    ) -> pb.ListWebhookDeliveriesResponse:
        status = _enum_name(presenter.DELIVERY_STATUS_NAMES, request.status, "status")
        with self._db.read() as session:
            deliveries, token = history.list_deliveries(
                session,
                current_principal(),
                endpoint_id=request.endpoint_id,
                app_id=request.app_id,
                event_id=request.event_id,
                status=status,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[presenter.delivery_pb(d) for d in deliveries], next_page_token=token
        )

    def GetWebhookDelivery(
        self, request: pb.GetWebhookDeliveryRequest, context: Any
    ) -> pb.WebhookDelivery:
        with self._db.read() as session:
            return presenter.delivery_pb(
                history.get_delivery(session, current_principal(), request.id)
            )

    def ListWebhookDeliveryAttempts(
        self, request: pb.ListWebhookDeliveryAttemptsRequest, context: Any
    ) -> pb.ListWebhookDeliveryAttemptsResponse:
        with self._db.read() as session:
            attempts, token = history.list_attempts(
                session,
                current_principal(),
                delivery_id=request.delivery_id,
                endpoint_id=request.endpoint_id,
                event_id=request.event_id,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListWebhookDeliveryAttemptsResponse(
            attempts=[presenter.attempt_pb(a) for a in attempts], next_page_token=token
        )
