"""Live mode never settles through the built-in test processor: without an
acquirer, live checkout and invoice payments are refused with
LIVE_PAYMENTS_NOT_CONFIGURED and nothing is charged or recorded; creating live
objects stays allowed. With an acquirer (here the live-capable double behind
FLINT_ACQUIRER) live payments go through (issue 13)."""

from __future__ import annotations

import grpc
import pytest

from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.commerce.v1 import resources_pb2 as pb
from flint.server import acquirer
from tests.commerce.support import Commerce
from tests.conftest import bearer
from tests.errors import grpc_error
from tests.installs.oauth_support import internal_key
from tests.live_acquirer import SPEC, LiveTestProcessor


@pytest.fixture(scope="module")
def internal(db) -> str:
    return internal_key(db)


@pytest.fixture
def live_shop(channel, new_merchant, internal) -> Commerce:
    return Commerce(channel, new_merchant.live_key, internal)


@pytest.fixture
def acquired_live_shop(live_channel, new_merchant, internal) -> Commerce:
    return Commerce(live_channel, new_merchant.live_key, internal)


def _refused_live(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = grpc_error(caught.value)
    assert (error.code, error.reason) == ("FAILED_PRECONDITION", "LIVE_PAYMENTS_NOT_CONFIGURED")


def _open_invoice(shop: Commerce) -> pb.Invoice:
    order = shop.create_order(("Retainer", 1, 30000))
    invoice = shop.new_invoice(order_id=order.id)
    return shop.invoices.FinalizeInvoice(
        invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=shop.auth
    )


def test_live_checkout_payment_without_an_acquirer_is_refused(live_shop: Commerce):
    order = live_shop.create_order()
    session = live_shop.create_session(order.id)
    assert order.environment == 2  # live
    entries = len(live_shop.timeline(order.id))
    _refused_live(lambda: live_shop.pay_session(session.id))
    # Nothing was charged, held or recorded: the order and session stay open.
    assert live_shop.get(order.id).status == pb.ORDER_STATUS_OPEN
    assert live_shop.get(order.id).amount_paid == 0
    assert len(live_shop.timeline(order.id)) == entries
    # Refused again the same way (no claim was left behind to say "in progress").
    _refused_live(lambda: live_shop.pay_session(session.id))


def test_live_invoice_payment_without_an_acquirer_is_refused(live_shop: Commerce):
    invoice = _open_invoice(live_shop)
    _refused_live(lambda: live_shop.pay_invoice(invoice.id))
    got = live_shop.invoices.GetInvoice(
        invoices_pb.GetInvoiceRequest(id=invoice.id), metadata=live_shop.auth
    )
    assert got.status == pb.INVOICE_STATUS_OPEN


def test_live_pay_pages_without_an_acquirer_are_refused(live_shop: Commerce):
    session = live_shop.create_session(live_shop.create_order().id)
    invoice = _open_invoice(live_shop)
    internal = bearer(live_shop.internal)
    _refused_live(
        lambda: live_shop.pay.GetCheckoutPage(
            pay_pb.GetCheckoutPageRequest(id=session.id), metadata=internal
        )
    )
    _refused_live(
        lambda: live_shop.pay.GetInvoicePage(
            pay_pb.GetInvoicePageRequest(id=invoice.id), metadata=internal
        )
    )


def test_test_mode_still_pays_through_the_test_processor(channel, new_merchant, internal):
    shop = Commerce(channel, new_merchant.test_key, internal)
    assert shop.paid_order().status == pb.ORDER_STATUS_PAID


def test_live_payment_with_an_acquirer_goes_through(acquired_live_shop: Commerce):
    order = acquired_live_shop.create_order()
    session = acquired_live_shop.create_session(order.id)
    page = acquired_live_shop.pay.GetCheckoutPage(
        pay_pb.GetCheckoutPageRequest(id=session.id),
        metadata=bearer(acquired_live_shop.internal),
    )
    assert (page.state, page.test_mode) == (pay_pb.PAY_PAGE_STATE_PAYABLE, False)
    assert acquired_live_shop.pay_session(session.id).succeeded
    assert acquired_live_shop.get(order.id).status == pb.ORDER_STATUS_PAID
    invoice = _open_invoice(acquired_live_shop)
    assert acquired_live_shop.pay_invoice(invoice.id).succeeded


# --- FLINT_ACQUIRER ----------------------------------------------------------------------


def test_no_acquirer_configured_is_the_test_processor_which_settles_no_live_money():
    built_in = acquirer.load_acquirer("")
    assert not built_in.processor.settles_live
    assert not built_in.vault.settles_live


def test_named_acquirer_is_loaded():
    loaded = acquirer.load_acquirer(SPEC)
    assert isinstance(loaded.processor, LiveTestProcessor)
    assert loaded.vault.settles_live


@pytest.mark.parametrize(
    "spec",
    [
        "tests.live_acquirer",  # no factory named
        "tests.no_such_module:factory",
        "tests.live_acquirer:no_such_factory",
        "tests.live_acquirer:LiveTestProcessor",  # not an Acquirer
        "flint.server.acquirer:builtin_acquirer",  # cannot settle live money
    ],
)
def test_misconfigured_acquirer_stops_the_server_at_start(spec: str):
    with pytest.raises(acquirer.AcquirerConfigError):
        acquirer.load_acquirer(spec)
