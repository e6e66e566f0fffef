"""Typed methods per resource: thin wrappers over `FlintClient.call`, one per
public RPC an app or merchant uses. Every create and update takes the resource
message or a dict in its JSON mapping, and an optional `idempotency_key`."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import empty_pb2, field_mask_pb2, json_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.billing.v1 import billing_service_pb2 as billing_pb
from flint.commerce.v1 import checkout_service_pb2 as checkout_pb
from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import payment_links_service_pb2 as links_pb
from flint.commerce.v1 import refunds_service_pb2 as refunds_pb
from flint.commerce.v1 import resources_pb2 as commerce
from flint.events.v1 import events_service_pb2 as events_pb
from flint.installs.v1 import installs_service_pb2 as installs_pb
from flint.sdk.event_stream import EventStream
from flint.webhooks.v1 import webhooks_service_pb2 as webhooks_pb

if TYPE_CHECKING:
    from flint.sdk.client import FlintClient

M = TypeVar("M", bound=Message)

MessageInput = Message | Mapping[str, Any]


def message_from(value: MessageInput, message_type: type[M]) -> M:
    """`value` as a `message_type`: the message itself, or parsed from a dict in
    the JSON mapping (`{"currency": "usd", "line_items": [...]}`)."""
    if isinstance(value, message_type):
        return value
    if isinstance(value, Message):
        raise TypeError(f"expected {message_type.__name__}, got {type(value).__name__}")
    return json_format.ParseDict(dict(value), message_type())


def _mask(paths: Sequence[str] | None) -> field_mask_pb2.FieldMask | None:
    return None if paths is None else field_mask_pb2.FieldMask(paths=list(paths))


def _environment(value: str | int | None) -> int:
    """`"test"`, `"live"`, `"ENVIRONMENT_TEST"` or the enum number."""
    if value is None:
        return accounts_pb.ENVIRONMENT_UNSPECIFIED
    if isinstance(value, int):
        return value
    name = value.upper()
    return accounts_pb.Environment.Value(
        name if name.startswith("ENVIRONMENT_") else f"ENVIRONMENT_{name}"
    )


class _Resource:
    service: ServiceDescriptor

    def __init__(self, client: FlintClient) -> None:
        self._client = client

    def _method(self, name: str) -> MethodDescriptor:
        return self.service.methods_by_name[name]


class Orders(_Resource):
    """Orders (`ord_…`). Reads need `orders:read`, writes `orders:write`."""

    service = orders_pb.DESCRIPTOR.services_by_name["OrdersService"]

    def create(self, order: MessageInput, *, idempotency_key: str | None = None) -> commerce.Order:
        """Creates an open order from its `currency` and `line_items`."""
        request = orders_pb.CreateOrderRequest(order=message_from(order, commerce.Order))
        return self._client.call(
            self._method("CreateOrder"), request, commerce.Order, idempotency_key=idempotency_key
        )

    def get(self, id: str) -> commerce.Order:
        """The order with its checkout sessions, payments, invoices and refunds."""
        return self._client.call(
            self._method("GetOrder"), orders_pb.GetOrderRequest(id=id), commerce.Order
        )

    def list(self, **filters: Any) -> Iterator[commerce.Order]:
        """Every order, newest first, fetched page by page. Filters:
        `customer_email`, `status`, `created_after`, `created_before`, `page_size`."""
        return self._client.paginate(
            self._method("ListOrders"),
            orders_pb.ListOrdersRequest(**filters),
            orders_pb.ListOrdersResponse,
            lambda page: page.orders,
        )

    def list_page(self, **filters: Any) -> orders_pb.ListOrdersResponse:
        """One page (pass `page_token` from the previous page's `next_page_token`)."""
        return self._client.call(
            self._method("ListOrders"),
            orders_pb.ListOrdersRequest(**filters),
            orders_pb.ListOrdersResponse,
        )

    def update(
        self,
        order: MessageInput,
        update_mask: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> commerce.Order:
        """Changes `customer_email` and `metadata` (those named in `update_mask`)."""
        request = orders_pb.UpdateOrderRequest(
            order=message_from(order, commerce.Order), update_mask=_mask(update_mask)
        )
        return self._client.call(
            self._method("UpdateOrder"), request, commerce.Order, idempotency_key=idempotency_key
        )

    def cancel(self, id: str, *, idempotency_key: str | None = None) -> commerce.Order:
        return self._client.call(
            self._method("CancelOrder"),
            orders_pb.CancelOrderRequest(id=id),
            commerce.Order,
            idempotency_key=idempotency_key,
        )

    def fulfill(self, id: str, *, idempotency_key: str | None = None) -> commerce.Order:
        return self._client.call(
            self._method("FulfillOrder"),
            orders_pb.FulfillOrderRequest(id=id),
            commerce.Order,
            idempotency_key=idempotency_key,
        )

    def add_note(self, id: str, text: str, *, idempotency_key: str | None = None) -> commerce.Order:
        return self._client.call(
            self._method("AddOrderNote"),
            orders_pb.AddOrderNoteRequest(id=id, text=text),
            commerce.Order,
            idempotency_key=idempotency_key,
        )

    def timeline(self, id: str) -> orders_pb.OrderTimeline:
        """The order's workflow as semantic entries, oldest first."""
        return self._client.call(
            self._method("GetOrderTimeline"),
            orders_pb.GetOrderTimelineRequest(id=id),
            orders_pb.OrderTimeline,
        )


class CheckoutSessions(_Resource):
    """Hosted checkout sessions (`cs_…`); creating needs `checkout:write`."""

    service = checkout_pb.DESCRIPTOR.services_by_name["CheckoutSessionsService"]

    def create(
        self, checkout_session: MessageInput, *, idempotency_key: str | None = None
    ) -> commerce.CheckoutSession:
        request = checkout_pb.CreateCheckoutSessionRequest(
            checkout_session=message_from(checkout_session, commerce.CheckoutSession)
        )
        return self._client.call(
            self._method("CreateCheckoutSession"),
            request,
            commerce.CheckoutSession,
            idempotency_key=idempotency_key,
        )

    def get(self, id: str) -> commerce.CheckoutSession:
        return self._client.call(
            self._method("GetCheckoutSession"),
            checkout_pb.GetCheckoutSessionRequest(id=id),
            commerce.CheckoutSession,
        )

    def list(self, **filters: Any) -> Iterator[commerce.CheckoutSession]:
        """Filters: `order_id`, `page_size`."""
        return self._client.paginate(
            self._method("ListCheckoutSessions"),
            checkout_pb.ListCheckoutSessionsRequest(**filters),
            checkout_pb.ListCheckoutSessionsResponse,
            lambda page: page.checkout_sessions,
        )

    def expire(self, id: str, *, idempotency_key: str | None = None) -> commerce.CheckoutSession:
        return self._client.call(
            self._method("ExpireCheckoutSession"),
            checkout_pb.ExpireCheckoutSessionRequest(id=id),
            commerce.CheckoutSession,
            idempotency_key=idempotency_key,
        )


class PaymentLinks(_Resource):
    """Payment links (`plink_…`)."""

    service = links_pb.DESCRIPTOR.services_by_name["PaymentLinksService"]

    def create(
        self, payment_link: MessageInput, *, idempotency_key: str | None = None
    ) -> commerce.PaymentLink:
        request = links_pb.CreatePaymentLinkRequest(
            payment_link=message_from(payment_link, commerce.PaymentLink)
        )
        return self._client.call(
            self._method("CreatePaymentLink"),
            request,
            commerce.PaymentLink,
            idempotency_key=idempotency_key,
        )

    def get(self, id: str) -> commerce.PaymentLink:
        return self._client.call(
            self._method("GetPaymentLink"),
            links_pb.GetPaymentLinkRequest(id=id),
            commerce.PaymentLink,
        )

    def list(self, **filters: Any) -> Iterator[commerce.PaymentLink]:
        return self._client.paginate(
            self._method("ListPaymentLinks"),
            links_pb.ListPaymentLinksRequest(**filters),
            links_pb.ListPaymentLinksResponse,
            lambda page: page.payment_links,
        )

    def update(
        self,
        payment_link: MessageInput,
        update_mask: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> commerce.PaymentLink:
        """Changes `active` (and the other updatable fields named in `update_mask`)."""
        request = links_pb.UpdatePaymentLinkRequest(
            payment_link=message_from(payment_link, commerce.PaymentLink),
            update_mask=_mask(update_mask),
        )
        return self._client.call(
            self._method("UpdatePaymentLink"),
            request,
            commerce.PaymentLink,
            idempotency_key=idempotency_key,
        )


class Invoices(_Resource):
    """Invoices (`in_…`): draft → open → paid / void / uncollectible."""

    service = invoices_pb.DESCRIPTOR.services_by_name["InvoicesService"]

    def create(
        self, invoice: MessageInput, *, idempotency_key: str | None = None
    ) -> commerce.Invoice:
        request = invoices_pb.CreateInvoiceRequest(invoice=message_from(invoice, commerce.Invoice))
        return self._client.call(
            self._method("CreateInvoice"),
            request,
            commerce.Invoice,
            idempotency_key=idempotency_key,
        )

    def get(self, id: str) -> commerce.Invoice:
        return self._client.call(
            self._method("GetInvoice"), invoices_pb.GetInvoiceRequest(id=id), commerce.Invoice
        )

    def list(self, **filters: Any) -> Iterator[commerce.Invoice]:
        return self._client.paginate(
            self._method("ListInvoices"),
            invoices_pb.ListInvoicesRequest(**filters),
            invoices_pb.ListInvoicesResponse,
            lambda page: page.invoices,
        )

    def update(
        self,
        invoice: MessageInput,
        update_mask: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> commerce.Invoice:
        """Edits a draft invoice."""
        request = invoices_pb.UpdateInvoiceRequest(
            invoice=message_from(invoice, commerce.Invoice), update_mask=_mask(update_mask)
        )
        return self._client.call(
            self._method("UpdateInvoice"),
            request,
            commerce.Invoice,
            idempotency_key=idempotency_key,
        )

    def _transition(
        self, rpc: str, request: Message, idempotency_key: str | None
    ) -> commerce.Invoice:
        return self._client.call(
            self._method(rpc), request, commerce.Invoice, idempotency_key=idempotency_key
        )

    def finalize(self, id: str, *, idempotency_key: str | None = None) -> commerce.Invoice:
        """Numbers the draft and opens it for payment on its hosted page."""
        return self._transition(
            "FinalizeInvoice", invoices_pb.FinalizeInvoiceRequest(id=id), idempotency_key
        )

    def void(self, id: str, *, idempotency_key: str | None = None) -> commerce.Invoice:
        return self._transition(
            "VoidInvoice", invoices_pb.VoidInvoiceRequest(id=id), idempotency_key
        )

    def mark_uncollectible(
        self, id: str, *, idempotency_key: str | None = None
    ) -> commerce.Invoice:
        return self._transition(
            "MarkUncollectibleInvoice",
            invoices_pb.MarkUncollectibleInvoiceRequest(id=id),
            idempotency_key,
        )


class Refunds(_Resource):
    """Refunds (`re_…`); creating needs `refunds:write`."""

    service = refunds_pb.DESCRIPTOR.services_by_name["RefundsService"]

    def create(
        self,
        refund: MessageInput | None = None,
        *,
        order_id: str = "",
        amount: int = 0,
        reason: str | int = 0,
        idempotency_key: str | None = None,
    ) -> commerce.Refund:
        """Refunds `amount` of an order (0: everything still refundable). Pass a
        `Refund`/dict, or `order_id`, `amount` and `reason` (e.g.
        `"REFUND_REASON_REQUESTED_BY_CUSTOMER"`)."""
        if refund is None:
            refund = commerce.Refund(order_id=order_id, amount=amount, reason=reason)  # type: ignore[arg-type]
        request = refunds_pb.CreateRefundRequest(refund=message_from(refund, commerce.Refund))
        return self._client.call(
            self._method("CreateRefund"), request, commerce.Refund, idempotency_key=idempotency_key
        )

    def get(self, id: str) -> commerce.Refund:
        return self._client.call(
            self._method("GetRefund"), refunds_pb.GetRefundRequest(id=id), commerce.Refund
        )

    def list(self, **filters: Any) -> Iterator[commerce.Refund]:
        """Filters: `order_id`, `page_size`."""
        return self._client.paginate(
            self._method("ListRefunds"),
            refunds_pb.ListRefundsRequest(**filters),
            refunds_pb.ListRefundsResponse,
            lambda page: page.refunds,
        )


class Payments(_Resource):
    """Card payments (`py_…`), created only by the processor."""

    service = refunds_pb.DESCRIPTOR.services_by_name["RefundsService"]

    def get(self, id: str) -> commerce.Payment:
        return self._client.call(
            self._method("GetPayment"), refunds_pb.GetPaymentRequest(id=id), commerce.Payment
        )

    def list(self, **filters: Any) -> Iterator[commerce.Payment]:
        """Filters: `order_id`, `page_size`."""
        return self._client.paginate(
            self._method("ListPayments"),
            refunds_pb.ListPaymentsRequest(**filters),
            refunds_pb.ListPaymentsResponse,
            lambda page: page.payments,
        )


class Installs(_Resource):
    """Installs (`ins_…`). An app reads and uninstalls its own install."""

    service = installs_pb.DESCRIPTOR.services_by_name["InstallsService"]

    def get(self, id: str) -> installs_pb.Install:
        return self._client.call(
            self._method("GetInstall"), installs_pb.GetInstallRequest(id=id), installs_pb.Install
        )

    def list(self, **filters: Any) -> Iterator[installs_pb.Install]:
        """A merchant's installs, or a partner's (filter `app_id`)."""
        return self._client.paginate(
            self._method("ListInstalls"),
            installs_pb.ListInstallsRequest(**filters),
            installs_pb.ListInstallsResponse,
            lambda page: page.installs,
        )

    def uninstall(self, id: str, *, idempotency_key: str | None = None) -> installs_pb.Install:
        """Ends every grant; every token of the install stops working."""
        return self._client.call(
            self._method("UninstallInstall"),
            installs_pb.UninstallInstallRequest(id=id),
            installs_pb.Install,
            idempotency_key=idempotency_key,
        )

    def revoke_grant(
        self, id: str, environment: str | int, *, idempotency_key: str | None = None
    ) -> installs_pb.Install:
        """Revokes one environment's grant (`"test"` or `"live"`); merchants only."""
        request = installs_pb.RevokeGrantRequest(id=id, environment=_environment(environment))  # type: ignore[arg-type]
        return self._client.call(
            self._method("RevokeGrant"),
            request,
            installs_pb.Install,
            idempotency_key=idempotency_key,
        )


class Events(_Resource):
    """Events (`evt_…`), oldest first by cursor; apps need `events:read`."""

    service = events_pb.DESCRIPTOR.services_by_name["EventsService"]

    def list_page(
        self,
        *,
        after: str = "",
        types: Sequence[str] = (),
        page_size: int = 0,
        **filters: Any,
    ) -> events_pb.ListEventsResponse:
        """One page after a cursor; continue from its `next_cursor`."""
        request = events_pb.ListEventsRequest(
            after=after, types=list(types), page_size=page_size, **filters
        )
        return self._client.call(self._method("ListEvents"), request, events_pb.ListEventsResponse)

    def list(
        self,
        *,
        after: str = "",
        types: Sequence[str] = (),
        page_size: int = 0,
        **filters: Any,
    ) -> Iterator[events_pb.Event]:
        """Every event after `after` (empty: the oldest retained) that exists now,
        page by page; ends when `has_more` is false. Filters: `object_id`,
        `created_after`, `created_before`."""
        cursor = after
        while True:
            page = self.list_page(after=cursor, types=types, page_size=page_size, **filters)
            yield from page.events
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def get(self, id: str) -> events_pb.Event:
        return self._client.call(
            self._method("GetEvent"), events_pb.GetEventRequest(id=id), events_pb.Event
        )

    def types(self) -> builtins.list[events_pb.EventTypeInfo]:
        """The event catalog."""
        response = self._client.call(
            self._method("ListEventTypes"),
            events_pb.ListEventTypesRequest(),
            events_pb.ListEventTypesResponse,
        )
        return list(response.event_types)

    def stream(
        self,
        *,
        after: str = "",
        types: Sequence[str] = (),
        heartbeat_seconds: int = 15,
        max_reconnects: int | None = None,
    ) -> EventStream:
        """Live events from `after` (empty: from now), reconnecting and resuming
        from the last cursor after a disconnect, without gaps or duplicates."""
        return EventStream(
            self._client.transport,
            after=after,
            types=types,
            heartbeat_seconds=heartbeat_seconds,
            max_reconnects=max_reconnects,
        )

    def iterate(self, *, after: str = "", types: Sequence[str] = ()) -> EventStream:
        """Alias of `stream` for readers that want every event after a cursor."""
        return self.stream(after=after, types=types)


class WebhookEndpoints(_Resource):
    """An app's webhook endpoints (`we_…`), managed with the partner key."""

    service = webhooks_pb.DESCRIPTOR.services_by_name["WebhooksService"]

    def create(
        self, app_id: str, webhook_endpoint: MessageInput, *, idempotency_key: str | None = None
    ) -> webhooks_pb.WebhookEndpoint:
        """Creates an endpoint; the response carries its secret, shown once."""
        request = webhooks_pb.CreateWebhookEndpointRequest(
            app_id=app_id,
            webhook_endpoint=message_from(webhook_endpoint, webhooks_pb.WebhookEndpoint),
        )
        return self._client.call(
            self._method("CreateWebhookEndpoint"),
            request,
            webhooks_pb.WebhookEndpoint,
            idempotency_key=idempotency_key,
        )

    def get(self, id: str) -> webhooks_pb.WebhookEndpoint:
        return self._client.call(
            self._method("GetWebhookEndpoint"),
            webhooks_pb.GetWebhookEndpointRequest(id=id),
            webhooks_pb.WebhookEndpoint,
        )

    def list(self, app_id: str, **filters: Any) -> Iterator[webhooks_pb.WebhookEndpoint]:
        return self._client.paginate(
            self._method("ListWebhookEndpoints"),
            webhooks_pb.ListWebhookEndpointsRequest(app_id=app_id, **filters),
            webhooks_pb.ListWebhookEndpointsResponse,
            lambda page: page.webhook_endpoints,
        )

    def update(
        self,
        webhook_endpoint: MessageInput,
        update_mask: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> webhooks_pb.WebhookEndpoint:
        request = webhooks_pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=message_from(webhook_endpoint, webhooks_pb.WebhookEndpoint),
            update_mask=_mask(update_mask),
        )
        return self._client.call(
            self._method("UpdateWebhookEndpoint"),
            request,
            webhooks_pb.WebhookEndpoint,
            idempotency_key=idempotency_key,
        )

    def delete(self, id: str, *, idempotency_key: str | None = None) -> None:
        self._client.call(
            self._method("DeleteWebhookEndpoint"),
            webhooks_pb.DeleteWebhookEndpointRequest(id=id),
            empty_pb2.Empty,
            idempotency_key=idempotency_key,
        )

    def rotate_secret(
        self, id: str, *, idempotency_key: str | None = None
    ) -> webhooks_pb.WebhookEndpoint:
        return self._client.call(
            self._method("RotateWebhookEndpointSecret"),
            webhooks_pb.RotateWebhookEndpointSecretRequest(id=id),
            webhooks_pb.WebhookEndpoint,
            idempotency_key=idempotency_key,
        )

    def test(
        self, id: str, environment: str | int = "test", *, idempotency_key: str | None = None
    ) -> webhooks_pb.TestWebhookEndpointResponse:
        """Sends a `webhook_endpoint.test` event now and returns the attempt."""
        request = webhooks_pb.TestWebhookEndpointRequest(
            id=id,
            environment=_environment(environment),  # type: ignore[arg-type]
        )
        return self._client.call(
            self._method("TestWebhookEndpoint"),
            request,
            webhooks_pb.TestWebhookEndpointResponse,
            idempotency_key=idempotency_key,
        )

    def replay_event(
        self, id: str, event_id: str, *, idempotency_key: str | None = None
    ) -> webhooks_pb.WebhookDelivery:
        return self._client.call(
            self._method("ReplayEvent"),
            webhooks_pb.ReplayEventRequest(id=id, event_id=event_id),
            webhooks_pb.WebhookDelivery,
            idempotency_key=idempotency_key,
        )

    def replay_events(
        self, id: str, *, idempotency_key: str | None = None, **window: Any
    ) -> webhooks_pb.ReplayEventsResponse:
        """Queues deliveries for a window (`start_cursor`/`end_cursor` or times,
        `only_missed`, `limit`, `page_token`)."""
        return self._client.call(
            self._method("ReplayEvents"),
            webhooks_pb.ReplayEventsRequest(id=id, **window),
            webhooks_pb.ReplayEventsResponse,
            idempotency_key=idempotency_key,
        )


class WebhookDeliveries(_Resource):
    """Deliveries of events to endpoints and every attempt of each."""

    service = webhooks_pb.DESCRIPTOR.services_by_name["WebhooksService"]

    def list(self, **filters: Any) -> Iterator[webhooks_pb.WebhookDelivery]:
        """Filters: `endpoint_id` or `app_id`, `event_id`, `status`."""
        return self._client.paginate(
            self._method("ListWebhookDeliveries"),
            webhooks_pb.ListWebhookDeliveriesRequest(**filters),
            webhooks_pb.ListWebhookDeliveriesResponse,
            lambda page: page.deliveries,
        )

    def get(self, id: str) -> webhooks_pb.WebhookDelivery:
        return self._client.call(
            self._method("GetWebhookDelivery"),
            webhooks_pb.GetWebhookDeliveryRequest(id=id),
            webhooks_pb.WebhookDelivery,
        )

    def attempts(self, **filters: Any) -> Iterator[webhooks_pb.WebhookDeliveryAttempt]:
        """Filters: `delivery_id` or `endpoint_id`, `event_id`."""
        return self._client.paginate(
            self._method("ListWebhookDeliveryAttempts"),
            webhooks_pb.ListWebhookDeliveryAttemptsRequest(**filters),
            webhooks_pb.ListWebhookDeliveryAttemptsResponse,
            lambda page: page.attempts,
        )


class AppCharges(_Resource):
    """App charges (`chg_…`) an app makes to the merchant (`billing:write`)."""

    service = billing_pb.DESCRIPTOR.services_by_name["BillingService"]

    def create(
        self, app_charge: MessageInput, *, idempotency_key: str | None = None
    ) -> billing_pb.AppCharge:
        """Creates a pending charge; send the merchant to its `confirmation_url`."""
        request = billing_pb.CreateAppChargeRequest(
            app_charge=message_from(app_charge, billing_pb.AppCharge)
        )
        return self._client.call(
            self._method("CreateAppCharge"),
            request,
            billing_pb.AppCharge,
            idempotency_key=idempotency_key,
        )

    def get(self, id: str) -> billing_pb.AppCharge:
        return self._client.call(
            self._method("GetAppCharge"),
            billing_pb.GetAppChargeRequest(id=id),
            billing_pb.AppCharge,
        )

    def list(self, **filters: Any) -> Iterator[billing_pb.AppCharge]:
        return self._client.paginate(
            self._method("ListAppCharges"),
            billing_pb.ListAppChargesRequest(**filters),
            billing_pb.ListAppChargesResponse,
            lambda page: page.app_charges,
        )

    def cancel(self, id: str, *, idempotency_key: str | None = None) -> billing_pb.AppCharge:
        return self._client.call(
            self._method("CancelAppCharge"),
            billing_pb.CancelAppChargeRequest(id=id),
            billing_pb.AppCharge,
            idempotency_key=idempotency_key,
        )

    def increase_cap(
        self, id: str, capped_amount: int, *, idempotency_key: str | None = None
    ) -> billing_pb.AppCharge:
        return self._client.call(
            self._method("IncreaseAppChargeCap"),
            billing_pb.IncreaseAppChargeCapRequest(id=id, capped_amount=capped_amount),
            billing_pb.AppCharge,
            idempotency_key=idempotency_key,
        )

    def record_usage(
        self, app_charge_id: str, usage_record: MessageInput, *, idempotency_key: str | None = None
    ) -> billing_pb.UsageRecord:
        """Reports usage on a usage charge (the record's own `idempotency_key`
        makes a repeated report count once)."""
        request = billing_pb.CreateUsageRecordRequest(
            app_charge_id=app_charge_id,
            usage_record=message_from(usage_record, billing_pb.UsageRecord),
        )
        return self._client.call(
            self._method("CreateUsageRecord"),
            request,
            billing_pb.UsageRecord,
            idempotency_key=idempotency_key,
        )


class AppInvoices(_Resource):
    """Platform invoices for app charges."""

    service = billing_pb.DESCRIPTOR.services_by_name["BillingService"]

    def list(self, **filters: Any) -> Iterator[billing_pb.AppInvoice]:
        return self._client.paginate(
            self._method("ListAppInvoices"),
            billing_pb.ListAppInvoicesRequest(**filters),
            billing_pb.ListAppInvoicesResponse,
            lambda page: page.app_invoices,
        )
