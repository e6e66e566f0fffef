"""gRPC commerce services: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from flint.commerce import (
    checkout,
    invoices,
    orders,
    payment_links,
    payments,
    presenter,
    refunds,
)
from flint.commerce.context import Actor, Tenant, actor_of, tenant_of
from flint.commerce.lines import LineInput
from flint.commerce.presenter import enum_name
from flint.commerce.processor import Processor
from flint.commerce.v1 import checkout_service_pb2 as checkout_pb
from flint.commerce.v1 import checkout_service_pb2_grpc as checkout_grpc
from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import invoices_service_pb2_grpc as invoices_grpc
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.commerce.v1 import pay_service_pb2_grpc as pay_grpc
from flint.commerce.v1 import payment_links_service_pb2 as links_pb
from flint.commerce.v1 import payment_links_service_pb2_grpc as links_grpc
from flint.commerce.v1 import refunds_service_pb2 as refunds_pb
from flint.commerce.v1 import refunds_service_pb2_grpc as refunds_grpc
from flint.commerce.v1 import resources_pb2 as pb
from flint.common.db import Database
from flint.server import idempotency
from flint.server.rpc import current_principal


def lines_of(items: Any) -> list[LineInput]:
    return [LineInput(i.name, i.quantity, i.unit_amount, i.sku) for i in items]


def time_or_none(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


class _Commerce:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _who(self) -> tuple[Tenant, Actor]:
        principal = current_principal()
        return tenant_of(principal), actor_of(principal)

    @staticmethod
    def _tenant() -> Tenant:
        return tenant_of(current_principal())


class OrdersServicer(_Commerce, orders_grpc.OrdersServiceServicer):
    def CreateOrder(self, request: orders_pb.CreateOrderRequest, context: Any) -> pb.Order:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            order = orders.create_order(
                uow,
                tenant,
                actor,
                lines=lines_of(request.order.line_items),
                currency=request.order.currency,
                customer_email=request.order.customer_email,
                metadata=dict(request.order.metadata),
            )
            return idempotency.commit(uow, presenter.order_pb(order))

    def GetOrder(self, request: orders_pb.GetOrderRequest, context: Any) -> pb.Order:
        with self._db.read() as session:
            view = orders.get_order(session, self._tenant(), request.id)
        return presenter.order_record_pb(view)

    def ListOrders(
        self, request: orders_pb.ListOrdersRequest, context: Any
    ) -> orders_pb.ListOrdersResponse:
        where = orders.OrderFilter(
            customer_email=request.customer_email,
            status=enum_name(presenter.ORDER_STATUSES, request.status, "status"),
            created_after=time_or_none(request.created_after, request.HasField("created_after")),
            created_before=time_or_none(request.created_before, request.HasField("created_before")),
        )
        with self._db.read() as session:
            found, token = orders.list_orders(
                session,
                self._tenant(),
                page_size=request.page_size,
                page_token=request.page_token,
                where=where,
            )
        return orders_pb.ListOrdersResponse(
            orders=[presenter.order_pb(o) for o in found], next_page_token=token
        )

    def UpdateOrder(self, request: orders_pb.UpdateOrderRequest, context: Any) -> pb.Order:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            order = orders.update_order(
                uow,
                tenant,
                actor,
                request.order.id,
                customer_email=request.order.customer_email,
                metadata=dict(request.order.metadata),
                mask=list(request.update_mask.paths),
            )
            return idempotency.commit(uow, presenter.order_pb(order))

    def CancelOrder(self, request: orders_pb.CancelOrderRequest, context: Any) -> pb.Order:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            order = orders.cancel_order(uow, tenant, actor, request.id)
            return idempotency.commit(uow, presenter.order_pb(order))

    def FulfillOrder(self, request: orders_pb.FulfillOrderRequest, context: Any) -> pb.Order:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            order = orders.fulfill_order(uow, tenant, actor, request.id)
            return idempotency.commit(uow, presenter.order_pb(order))

    def AddOrderNote(self, request: orders_pb.AddOrderNoteRequest, context: Any) -> pb.Order:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            view = orders.add_note(uow, tenant, actor, request.id, request.text)
            return idempotency.commit(uow, presenter.order_pb(view.order, notes=view.notes))

    def GetOrderTimeline(
        self, request: orders_pb.GetOrderTimelineRequest, context: Any
    ) -> orders_pb.OrderTimeline:
        with self._db.read() as session:
            entries = orders.get_timeline(session, self._tenant(), request.id)
        return orders_pb.OrderTimeline(
            order_id=request.id, entries=[presenter.timeline_entry_pb(e) for e in entries]
        )


class CheckoutSessionsServicer(_Commerce, checkout_grpc.CheckoutSessionsServiceServicer):
    def CreateCheckoutSession(
        self, request: checkout_pb.CreateCheckoutSessionRequest, context: Any
    ) -> pb.CheckoutSession:
        given = request.checkout_session
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            session, order = checkout.create_session(
                uow,
                tenant,
                actor,
                order_id=given.order_id,
                lines=lines_of(given.line_items),
                currency=given.currency,
                success_url=given.success_url,
                cancel_url=given.cancel_url,
                expires_at=time_or_none(given.expires_at, given.HasField("expires_at")),
                customer_email=given.customer_email,
            )
            return idempotency.commit(uow, presenter.session_pb(session, order))

    def GetCheckoutSession(
        self, request: checkout_pb.GetCheckoutSessionRequest, context: Any
    ) -> pb.CheckoutSession:
        with self._db.read() as session:
            record, order = checkout.get_session(session, self._tenant(), request.id)
        return presenter.session_pb(record, order)

    def ListCheckoutSessions(
        self, request: checkout_pb.ListCheckoutSessionsRequest, context: Any
    ) -> checkout_pb.ListCheckoutSessionsResponse:
        with self._db.read() as session:
            found, token = checkout.list_sessions(
                session,
                self._tenant(),
                page_size=request.page_size,
                page_token=request.page_token,
                order_id=request.order_id,
            )
        return checkout_pb.ListCheckoutSessionsResponse(
            checkout_sessions=[presenter.session_pb(s) for s in found], next_page_token=token
        )

    def ExpireCheckoutSession(
        self, request: checkout_pb.ExpireCheckoutSessionRequest, context: Any
    ) -> pb.CheckoutSession:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            record, order = checkout.expire_session(uow, tenant, actor, request.id)
            return idempotency.commit(uow, presenter.session_pb(record, order))


class PaymentLinksServicer(_Commerce, links_grpc.PaymentLinksServiceServicer):
    def CreatePaymentLink(
        self, request: links_pb.CreatePaymentLinkRequest, context: Any
    ) -> pb.PaymentLink:
        given = request.payment_link
        with self._db.unit_of_work() as uow:
            link = payment_links.create_link(
                uow,
                self._tenant(),
                lines=lines_of(given.line_items),
                currency=given.currency,
                success_url=given.success_url,
                metadata=dict(given.metadata),
            )
            return idempotency.commit(uow, presenter.payment_link_pb(link))

    def GetPaymentLink(
        self, request: links_pb.GetPaymentLinkRequest, context: Any
    ) -> pb.PaymentLink:
        with self._db.read() as session:
            return presenter.payment_link_pb(
                payment_links.load_link(session, self._tenant(), request.id)
            )

    def ListPaymentLinks(
        self, request: links_pb.ListPaymentLinksRequest, context: Any
    ) -> links_pb.ListPaymentLinksResponse:
        with self._db.read() as session:
            found, token = payment_links.list_links(
                session, self._tenant(), page_size=request.page_size, page_token=request.page_token
            )
        return links_pb.ListPaymentLinksResponse(
            payment_links=[presenter.payment_link_pb(link) for link in found],
            next_page_token=token,
        )

    def UpdatePaymentLink(
        self, request: links_pb.UpdatePaymentLinkRequest, context: Any
    ) -> pb.PaymentLink:
        given = request.payment_link
        with self._db.unit_of_work() as uow:
            link = payment_links.update_link(
                uow,
                self._tenant(),
                given.id,
                active=given.active,
                success_url=given.success_url,
                metadata=dict(given.metadata),
                mask=list(request.update_mask.paths),
            )
            return idempotency.commit(uow, presenter.payment_link_pb(link))


def invoice_fields(invoice: pb.Invoice) -> invoices.InvoiceFields:
    return invoices.InvoiceFields(
        customer_email=invoice.customer_email,
        lines=lines_of(invoice.line_items),
        currency=invoice.currency,
        due_date=invoice.due_date,
        order_id=invoice.order_id,
        metadata=dict(invoice.metadata),
    )


class InvoicesServicer(_Commerce, invoices_grpc.InvoicesServiceServicer):
    def CreateInvoice(self, request: invoices_pb.CreateInvoiceRequest, context: Any) -> pb.Invoice:
        with self._db.unit_of_work() as uow:
            invoice = invoices.create_invoice(uow, self._tenant(), invoice_fields(request.invoice))
            return idempotency.commit(uow, presenter.invoice_pb(invoice))

    def GetInvoice(self, request: invoices_pb.GetInvoiceRequest, context: Any) -> pb.Invoice:
        with self._db.read() as session:
            return presenter.invoice_pb(invoices.load_invoice(session, self._tenant(), request.id))

    def ListInvoices(
        self, request: invoices_pb.ListInvoicesRequest, context: Any
    ) -> invoices_pb.ListInvoicesResponse:
        with self._db.read() as session:
            found, token = invoices.list_invoices(
                session,
                self._tenant(),
                page_size=request.page_size,
                page_token=request.page_token,
                status=enum_name(presenter.INVOICE_STATUSES, request.status, "status"),
                order_id=request.order_id,
            )
        return invoices_pb.ListInvoicesResponse(
            invoices=[presenter.invoice_pb(i) for i in found], next_page_token=token
        )

    def UpdateInvoice(self, request: invoices_pb.UpdateInvoiceRequest, context: Any) -> pb.Invoice:
        with self._db.unit_of_work() as uow:
            invoice = invoices.update_invoice(
                uow,
                self._tenant(),
                request.invoice.id,
                invoice_fields(request.invoice),
                list(request.update_mask.paths),
            )
            return idempotency.commit(uow, presenter.invoice_pb(invoice))

    def FinalizeInvoice(
        self, request: invoices_pb.FinalizeInvoiceRequest, context: Any
    ) -> pb.Invoice:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            invoice = invoices.finalize_invoice(uow, tenant, actor, request.id)
            return idempotency.commit(uow, presenter.invoice_pb(invoice))

    def VoidInvoice(self, request: invoices_pb.VoidInvoiceRequest, context: Any) -> pb.Invoice:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            invoice = invoices.void_invoice(uow, tenant, actor, request.id)
            return idempotency.commit(uow, presenter.invoice_pb(invoice))

    def MarkUncollectibleInvoice(
        self, request: invoices_pb.MarkUncollectibleInvoiceRequest, context: Any
    ) -> pb.Invoice:
        with self._db.unit_of_work() as uow:
            tenant, actor = self._who()
            invoice = invoices.mark_uncollectible(uow, tenant, actor, request.id)
            return idempotency.commit(uow, presenter.invoice_pb(invoice))


class RefundsServicer(_Commerce, refunds_grpc.RefundsServiceServicer):
    def __init__(self, db: Database, processor: Processor) -> None:
        super().__init__(db)
        self._processor = processor

    def CreateRefund(self, request: refunds_pb.CreateRefundRequest, context: Any) -> pb.Refund:
        given = request.refund
        principal = current_principal()
        actor = actor_of(principal)
        return refunds.create_refund(
            self._db,
            self._processor,
            tenant_of(principal),
            actor,
            refunds.RefundRequest(
                order_id=given.order_id,
                amount=given.amount,
                reason=enum_name(presenter.REFUND_REASONS, given.reason, "refund.reason"),
                metadata=dict(given.metadata),
            ),
            finish=lambda uow, refund: idempotency.commit(uow, presenter.refund_pb(refund)),
        )

    def GetRefund(self, request: refunds_pb.GetRefundRequest, context: Any) -> pb.Refund:
        with self._db.read() as session:
            return presenter.refund_pb(refunds.load_refund(session, self._tenant(), request.id))

    def ListRefunds(
        self, request: refunds_pb.ListRefundsRequest, context: Any
    ) -> refunds_pb.ListRefundsResponse:
        with self._db.read() as session:
            found, token = refunds.list_refunds(
                session,
                self._tenant(),
                page_size=request.page_size,
                page_token=request.page_token,
                order_id=request.order_id,
            )
        return refunds_pb.ListRefundsResponse(
            refunds=[presenter.refund_pb(r) for r in found], next_page_token=token
        )

    def GetPayment(self, request: refunds_pb.GetPaymentRequest, context: Any) -> pb.Payment:
        with self._db.read() as session:
            return presenter.payment_pb(refunds.load_payment(session, self._tenant(), request.id))

    def ListPayments(
        self, request: refunds_pb.ListPaymentsRequest, context: Any
    ) -> refunds_pb.ListPaymentsResponse:
        with self._db.read() as session:
            found, token = refunds.list_payments(
                session,
                self._tenant(),
                page_size=request.page_size,
                page_token=request.page_token,
                order_id=request.order_id,
            )
        return refunds_pb.ListPaymentsResponse(
            payments=[presenter.payment_pb(p) for p in found], next_page_token=token
        )


STATES: dict[str, pay_pb.PayPageState.ValueType] = {
    "payable": pay_pb.PAY_PAGE_STATE_PAYABLE,
    "paid": pay_pb.PAY_PAGE_STATE_PAID,
    "expired": pay_pb.PAY_PAGE_STATE_EXPIRED,
    "closed": pay_pb.PAY_PAGE_STATE_CLOSED,
}


def pay_page_pb(page: payments.PayPage) -> pay_pb.PayPage:
    return pay_pb.PayPage(
        id=page.id,
        state=STATES[page.state],
        merchant_name=page.merchant_name,
        line_items=presenter.line_items_pb(page.line_items),
        currency=page.currency,
        amount_total=page.amount_total,
        test_mode=page.test_mode,
        success_url=page.success_url,
        cancel_url=page.cancel_url,
        invoice_number=page.invoice_number,
        due_date=page.due_date,
    )


def card_input(card: pay_pb.CardDetails) -> payments.CardInput:
    return payments.CardInput(card.number, card.exp_month, card.exp_year, card.cvc)


def pay_result_pb(outcome: payments.PayOutcome) -> pay_pb.PayResult:
    return pay_pb.PayResult(
        succeeded=outcome.succeeded,
        payment_id=outcome.payment_id,
        decline_code=outcome.decline_code,
        message=outcome.message,
        redirect_url=outcome.redirect_url,
    )


class PayServicer(pay_grpc.PayServiceServicer):
    """The buyer's side, called by the hosted web app."""

    def __init__(self, db: Database, processor: Processor) -> None:
        self._db = db
        self._processor = processor

    def GetCheckoutPage(
        self, request: pay_pb.GetCheckoutPageRequest, context: Any
    ) -> pay_pb.PayPage:
        with self._db.read() as session:
            page = payments.checkout_page(session, request.id, self._db.clock())
        return pay_page_pb(payments.offer(page, self._processor))

    def PayCheckoutSession(
        self, request: pay_pb.PayCheckoutSessionRequest, context: Any
    ) -> pay_pb.PayResult:
        outcome = payments.pay_checkout_session(
            self._db, self._processor, request.id, card_input(request.card)
        )
        return pay_result_pb(outcome)

    def GetPaymentLinkPage(
        self, request: pay_pb.GetPaymentLinkPageRequest, context: Any
    ) -> pay_pb.PayPage:
        with self._db.read() as session:
            return pay_page_pb(payments.payment_link_page(session, request.id))

    def OpenPaymentLink(
        self, request: pay_pb.OpenPaymentLinkRequest, context: Any
    ) -> pay_pb.PayPage:
        with self._db.unit_of_work() as uow:
            session = payment_links.open_link(uow, request.id)
            uow.session.flush()
            page = payments.checkout_page(uow.session, session.id, uow.now)
            return idempotency.commit(uow, pay_page_pb(payments.offer(page, self._processor)))

    def GetInvoicePage(self, request: pay_pb.GetInvoicePageRequest, context: Any) -> pay_pb.PayPage:
        with self._db.read() as session:
            page = payments.invoice_page(session, request.id)
        return pay_page_pb(payments.offer(page, self._processor))

    def PayInvoice(self, request: pay_pb.PayInvoiceRequest, context: Any) -> pay_pb.PayResult:
        outcome = payments.pay_invoice(
            self._db, self._processor, request.id, card_input(request.card), invoices.mark_paid
        )
        return pay_result_pb(outcome)
