"""A buyer pays in a real browser: headless Chromium on a phone-sized screen
opens the URLs the merchant API hands out, through Envoy, with the gRPC server,
Envoy and the hosted app (`python -m flint.hosted`) as real processes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.commerce.v1 import checkout_service_pb2 as checkout_pb
from flint.commerce.v1 import checkout_service_pb2_grpc as checkout_grpc
from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import invoices_service_pb2_grpc as invoices_grpc
from flint.commerce.v1 import payment_links_service_pb2 as links_pb
from flint.commerce.v1 import payment_links_service_pb2_grpc as links_grpc
from flint.commerce.v1 import resources_pb2 as res
from flint.common.db import Database
from flint.supervisor import wait_for_envoy
from tests.conftest import Process, bearer, free_port, start_grpc_server
from tests.installs.oauth_support import internal_key

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SHOP = "https://shop.example.com"
SUCCESS_URL = f"{SHOP}/thanks"
CANCEL_URL = f"{SHOP}/cart"
PHONE = {"width": 375, "height": 740}


@dataclass
class Stack:
    url: str  # Envoy, as browsers see it
    grpc_port: int


def _wait_for_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def stack(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("pay-e2e")
    http_port, hosted_port, admin_port = free_port(), free_port(), free_port()
    public_url = f"http://127.0.0.1:{http_port}"
    key = internal_key(db)
    # The core builds the pages' URLs (CheckoutSession.url, …) from the public URL.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLINT_PUBLIC_URL", public_url)
        grpc_process, grpc_port = start_grpc_server(database_url, log_dir)
    processes = [grpc_process]
    try:
        with (log_dir / "envoy.log").open("w") as log:
            envoy = Process(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "flint", "envoy"),
                        *("--http-port", str(http_port), "--grpc-port", str(grpc_port)),
                        *("--hosted-port", str(hosted_port), "--admin-port", str(admin_port)),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
                log_dir / "envoy.log",
            )
        processes.append(envoy)
        assert wait_for_envoy(admin_port, 30), envoy.log()
        with (log_dir / "hosted.log").open("w") as log:
            hosted = Process(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "flint.hosted", "--port", str(hosted_port)),
                        *("--grpc-target", f"127.0.0.1:{grpc_port}", "--public-url", public_url),
                    ],
                    env={
                        **os.environ,
                        "FLINT_INTERNAL_KEY": key,
                        "FLINT_HOSTED_SECRET": "pay-e2e-secret-" + "x" * 32,
                    },
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
                log_dir / "hosted.log",
            )
        processes.append(hosted)
        assert _wait_for_http(f"http://127.0.0.1:{hosted_port}/hosted/healthz", 30), hosted.log()
        yield Stack(public_url, grpc_port)
    finally:
        for process in reversed(processes):
            process.stop()
    # Whatever happened in the browser, the hosted app never logged a card.
    log = hosted.log()
    assert "http_request" in log
    assert "4242424242424242" not in log
    assert "4000000000000002" not in log


@dataclass
class Merchant:
    key: str
    channel: grpc.Channel

    def checkout(self) -> res.CheckoutSession:
        return checkout_grpc.CheckoutSessionsServiceStub(self.channel).CreateCheckoutSession(
            checkout_pb.CreateCheckoutSessionRequest(
                checkout_session=res.CheckoutSession(
                    line_items=[
                        res.LineItem(name="Blue mug", quantity=2, unit_amount=1000),
                        res.LineItem(name="Gift wrap", quantity=1, unit_amount=500),
                    ],
                    currency="usd",
                    success_url=SUCCESS_URL,
                    cancel_url=CANCEL_URL,
                )
            ),
            metadata=bearer(self.key),
        )

    def session(self, session_id: str) -> res.CheckoutSession:
        return checkout_grpc.CheckoutSessionsServiceStub(self.channel).GetCheckoutSession(
            checkout_pb.GetCheckoutSessionRequest(id=session_id), metadata=bearer(self.key)
        )

    def invoice(self) -> res.Invoice:
        stub = invoices_grpc.InvoicesServiceStub(self.channel)
        draft = stub.CreateInvoice(
            invoices_pb.CreateInvoiceRequest(
                invoice=res.Invoice(
                    customer_email="buyer@example.com",
                    line_items=[
                        res.LineItem(name="Consulting, March", quantity=3, unit_amount=12000)
                    ],
                    currency="usd",
                    due_date="2031-03-05",
                )
            ),
            metadata=bearer(self.key),
        )
        return stub.FinalizeInvoice(
            invoices_pb.FinalizeInvoiceRequest(id=draft.id), metadata=bearer(self.key)
        )

    def get_invoice(self, invoice_id: str) -> res.Invoice:
        return invoices_grpc.InvoicesServiceStub(self.channel).GetInvoice(
            invoices_pb.GetInvoiceRequest(id=invoice_id), metadata=bearer(self.key)
        )

    def link(self) -> res.PaymentLink:
        return links_grpc.PaymentLinksServiceStub(self.channel).CreatePaymentLink(
            links_pb.CreatePaymentLinkRequest(
                payment_link=res.PaymentLink(
                    line_items=[res.LineItem(name="Workshop ticket", quantity=1, unit_amount=4900)],
                    currency="usd",
                    success_url=SUCCESS_URL,
                    active=True,
                )
            ),
            metadata=bearer(self.key),
        )


@pytest.fixture
def merchant(stack: Stack, admin_key: str) -> Iterator[Merchant]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        created = accounts_grpc.AccountsServiceStub(channel).CreateMerchant(
            accounts_pb.CreateMerchantRequest(
                merchant=accounts_pb.Merchant(
                    name="Corner Shop", email=f"shop-{secrets.token_hex(4)}@example.com"
                ),
                password="correct horse battery",
            ),
            metadata=bearer(admin_key),
        )
        keys = {key.environment: key.secret for key in created.secret_keys}
        yield Merchant(keys[accounts_pb.ENVIRONMENT_TEST], channel)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Chromium is needed at /usr/bin/chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@dataclass
class Phone:
    page: Page
    csp_violations: list[str]
    shop_visits: list[str]


@pytest.fixture
def phone(browser: Browser) -> Iterator[Phone]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    violations: list[str] = []
    visits: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    def merchant_site(route: Route) -> None:
        visits.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="Thanks for your order")

    page.route(f"{SHOP}/**", merchant_site)
    yield Phone(page, violations, visits)
    context.close()


def _fits_the_screen(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def _submit_card(page: Page, number: str, expiry: str = "12/34", cvc: str = "123") -> int:
    page.fill("#card-number", number)
    page.fill("#card-expiry", expiry)
    page.fill("#card-cvc", cvc)
    with page.expect_navigation() as navigation:
        page.click("button.pay-button")
    response = navigation.value
    return response.status if response is not None else 0


def test_buyer_is_declined_then_pays_a_checkout_on_a_phone(
    stack: Stack, merchant: Merchant, phone: Phone, tmp_path: Path
) -> None:
    session = merchant.checkout()
    assert session.url == f"{stack.url}/pay/{session.id}"
    page = phone.page
    opened = page.goto(session.url)
    assert opened is not None
    assert opened.status == 200
    text = page.inner_text("main")
    assert "TEST MODE" in text
    assert "Corner Shop" in text
    assert "Blue mug" in text
    assert "Pay $25.00" in text
    # The stylesheet applies under the CSP, and the page fits a phone.
    colour = page.eval_on_selector("button.pay-button", "e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(29, 78, 216)"
    assert _fits_the_screen(page)
    assert page.get_attribute("#card-number", "autocomplete") == "cc-number"
    assert page.get_attribute("#card-expiry", "autocomplete") == "cc-exp"
    assert page.get_attribute("#card-cvc", "autocomplete") == "cc-csc"
    page.screenshot(path=str(tmp_path / "checkout.png"), full_page=True)

    assert _submit_card(page, "4242 4242 4242 4241", expiry="01/20") == 400
    assert page.inner_text("#card-number-error") == "Your card number is invalid."
    assert page.get_attribute("#card-number", "aria-describedby") == "card-number-error"
    assert _fits_the_screen(page)
    page.screenshot(path=str(tmp_path / "checkout-invalid.png"), full_page=True)

    assert _submit_card(page, "4000 0000 0000 0002") == 402
    assert "Your card was declined." in page.inner_text("[role=alert]")
    assert page.input_value("#card-number") == ""
    assert page.input_value("#card-cvc") == ""
    assert _fits_the_screen(page)
    page.screenshot(path=str(tmp_path / "checkout-declined.png"), full_page=True)
    assert merchant.session(session.id).status == res.CHECKOUT_SESSION_STATUS_OPEN

    # The 303 to the merchant after the POST passes Chrome's form-action check.
    page.fill("#card-number", "4242 4242 4242 4242")
    page.fill("#card-expiry", "12/34")
    page.fill("#card-cvc", "123")
    page.click("button.pay-button")
    page.wait_for_url(f"{SHOP}/**")
    assert phone.shop_visits == [SUCCESS_URL]
    assert merchant.session(session.id).status == res.CHECKOUT_SESSION_STATUS_COMPLETE
    assert phone.csp_violations == []

    # Back on the page later: it says it is paid.
    again = page.goto(session.url)
    assert again is not None
    assert again.status == 200
    assert "Payment complete" in page.inner_text("main")
    page.screenshot(path=str(tmp_path / "checkout-paid.png"), full_page=True)
    assert (tmp_path / "checkout.png").stat().st_size > 0


def test_buyer_pays_an_invoice_on_a_phone(
    stack: Stack, merchant: Merchant, phone: Phone, tmp_path: Path
) -> None:
    invoice = merchant.invoice()
    assert invoice.url == f"{stack.url}/i/{invoice.id}"
    page = phone.page
    opened = page.goto(invoice.url)
    assert opened is not None
    assert opened.status == 200
    text = page.inner_text("main")
    assert f"Invoice {invoice.number}" in text
    assert "Due March 5, 2031" in text
    assert "Pay $360.00" in text
    assert "TEST MODE" in text
    assert _fits_the_screen(page)
    page.screenshot(path=str(tmp_path / "invoice.png"), full_page=True)

    status = _submit_card(page, "4242424242424242", expiry="1/34")
    assert status == 200
    assert page.url == invoice.url
    assert f"Invoice {invoice.number} is paid" in page.inner_text("main")
    assert merchant.get_invoice(invoice.id).status == res.INVOICE_STATUS_PAID
    page.screenshot(path=str(tmp_path / "invoice-paid.png"), full_page=True)
    assert phone.csp_violations == []


def test_buyer_opens_a_payment_link_and_pays(
    stack: Stack, merchant: Merchant, phone: Phone, tmp_path: Path
) -> None:
    link = merchant.link()
    assert link.url == f"{stack.url}/l/{link.id}"
    page = phone.page
    landing = page.goto(link.url)
    assert landing is not None
    assert landing.status == 200
    # The landing page shows what is for sale and opens nothing yet.
    assert page.url == link.url
    assert "Workshop ticket" in page.inner_text("main")
    page.screenshot(path=str(tmp_path / "link.png"), full_page=True)
    with page.expect_navigation():
        page.click("button.pay-button")
    assert page.url.startswith(f"{stack.url}/pay/cs_")
    assert "Pay $49.00" in page.inner_text("main")
    page.fill("#card-number", "4242 4242 4242 4242")
    page.fill("#card-expiry", "12/34")
    page.fill("#card-cvc", "123")
    page.click("button.pay-button")
    page.wait_for_url(f"{SHOP}/**")
    assert phone.shop_visits == [SUCCESS_URL]
    assert phone.csp_violations == []
