"""Stubs and helpers for commerce tests against the real server."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from flint.commerce.v1 import checkout_service_pb2 as checkout_pb
from flint.commerce.v1 import checkout_service_pb2_grpc as checkout_grpc
from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import invoices_service_pb2_grpc as invoices_grpc
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.commerce.v1 import pay_service_pb2_grpc as pay_grpc
from flint.commerce.v1 import payment_links_service_pb2_grpc as links_grpc
from flint.commerce.v1 import refunds_service_pb2 as refunds_pb
from flint.commerce.v1 import refunds_service_pb2_grpc as refunds_grpc
from flint.commerce.v1 import resources_pb2 as pb
from tests.conftest import bearer

GOOD_CARD = "4242424242424242"
MASTERCARD = "5555555555554444"
DECLINED_CARD = "4000000000000002"
NO_FUNDS_CARD = "4000000000009995"


def card(number: str) -> pay_pb.CardDetails:
    """A buyer's card entry: `number` with a valid expiry and CVC."""
    return pay_pb.CardDetails(number=number, exp_month=12, exp_year=2030, cvc="123")


@dataclass
class Commerce:
    channel: grpc.Channel
    key: str
    internal: str

    @property
    def orders(self) -> orders_grpc.OrdersServiceStub:
        return orders_grpc.OrdersServiceStub(self.channel)

    @property
    def sessions(self) -> checkout_grpc.CheckoutSessionsServiceStub:
        return checkout_grpc.CheckoutSessionsServiceStub(self.channel)

    @property
    def links(self) -> links_grpc.PaymentLinksServiceStub:
        return links_grpc.PaymentLinksServiceStub(self.channel)

    @property
    def invoices(self) -> invoices_grpc.InvoicesServiceStub:
        return invoices_grpc.InvoicesServiceStub(self.channel)

    @property
    def refunds(self) -> refunds_grpc.RefundsServiceStub:
        return refunds_grpc.RefundsServiceStub(self.channel)

    @property
    def pay(self) -> pay_grpc.PayServiceStub:
        return pay_grpc.PayServiceStub(self.channel)

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return bearer(self.key)

    def create_order(
        self, *items: tuple[str, int, int], currency: str = "usd", **fields
    ) -> pb.Order:  # type: ignore[no-untyped-def]
        lines = [pb.LineItem(name=n, quantity=q, unit_amount=a) for n, q, a in items] or [
            pb.LineItem(name="T-shirt", quantity=2, unit_amount=1500)
        ]
        return self.orders.CreateOrder(
            orders_pb.CreateOrderRequest(
                order=pb.Order(line_items=lines, currency=currency, **fields)
            ),
            metadata=self.auth,
        )

    def create_session(self, order_id: str, **fields) -> pb.CheckoutSession:  # type: ignore[no-untyped-def]
        return self.sessions.CreateCheckoutSession(
            checkout_pb.CreateCheckoutSessionRequest(
                checkout_session=pb.CheckoutSession(
                    order_id=order_id, success_url="https://shop.example.com/thanks", **fields
                )
            ),
            metadata=self.auth,
        )

    def pay_session(self, session_id: str, number: str = GOOD_CARD) -> pay_pb.PayResult:
        request = pay_pb.PayCheckoutSessionRequest(id=session_id, card=card(number))
        return self.pay.PayCheckoutSession(request, metadata=bearer(self.internal))

    def pay_invoice(self, invoice_id: str, number: str = GOOD_CARD) -> pay_pb.PayResult:
        request = pay_pb.PayInvoiceRequest(id=invoice_id, card=card(number))
        return self.pay.PayInvoice(request, metadata=bearer(self.internal))

    def paid_order(self, number: str = GOOD_CARD) -> pb.Order:
        order = self.create_order()
        session = self.create_session(order.id)
        assert self.pay_session(session.id, number).succeeded
        return self.get(order.id)

    def get(self, order_id: str) -> pb.Order:
        return self.orders.GetOrder(orders_pb.GetOrderRequest(id=order_id), metadata=self.auth)

    def refund(self, order_id: str, amount: int = 0, **fields) -> pb.Refund:  # type: ignore[no-untyped-def]
        return self.refunds.CreateRefund(
            refunds_pb.CreateRefundRequest(
                refund=pb.Refund(order_id=order_id, amount=amount, **fields)
            ),
            metadata=self.auth,
        )

    def timeline(self, order_id: str) -> list[pb.TimelineEntry]:
        return list(
            self.orders.GetOrderTimeline(
                orders_pb.GetOrderTimelineRequest(id=order_id), metadata=self.auth
            ).entries
        )

    def new_invoice(self, **fields) -> pb.Invoice:  # type: ignore[no-untyped-def]
        values = {
            "customer_email": "buyer@example.com",
            "line_items": [pb.LineItem(name="Consulting", quantity=3, unit_amount=10000)],
            "currency": "usd",
            "due_date": "2030-01-31",
        }
        values.update(fields)
        return self.invoices.CreateInvoice(
            invoices_pb.CreateInvoiceRequest(invoice=pb.Invoice(**values)), metadata=self.auth
        )
