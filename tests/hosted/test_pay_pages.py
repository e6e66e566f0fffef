"""The buyer's hosted payment pages (checkout, payment link, invoice) under
Starlette's TestClient, against the real gRPC server on the session database.
Each test makes its own merchant and its objects through the merchant API, as a
plugin would, and then behaves as an anonymous buyer's browser."""

from __future__ import annotations

import logging
import re
import secrets
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import func, select
from starlette.exceptions import StarletteDeprecationWarning

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.commerce.models import CheckoutSessionRecord, OrderRecord
from flint.commerce.v1 import checkout_service_pb2 as checkout_pb
from flint.commerce.v1 import checkout_service_pb2_grpc as checkout_grpc
from flint.commerce.v1 import invoices_service_pb2 as invoices_pb
from flint.commerce.v1 import invoices_service_pb2_grpc as invoices_grpc
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import payment_links_service_pb2 as links_pb
from flint.commerce.v1 import payment_links_service_pb2_grpc as links_grpc
from flint.commerce.v1 import resources_pb2 as res
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.hosted import HostedSettings, create_app
from tests.conftest import bearer
from tests.installs.oauth_support import internal_key

# Starlette's TestClient warns at import when it finds httpx instead of httpx2.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRET = "pay-pages-test-secret-0123456789abcdef"
SUCCESS_URL = "https://shop.example.com/thanks?order=42"
CANCEL_URL = "https://shop.example.com/cart"
GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
NO_FUNDS_CARD = "4000000000009995"
LUHN_FAILS = "4242424242424241"
CVC = "987"
FUTURE = "12/34"
MERCHANT_NAME = "Corner Shop"

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
NONCE_INPUT = re.compile(r'name="nonce" value="([^"]+)"')
INPUT_TAG = re.compile(r"<input\b[^>]*>", re.DOTALL)


@dataclass
class Shop:
    """A merchant's test key and the commerce API, and a buyer's browser."""

    key: str
    live_key: str
    browser: TestClient
    checkout: checkout_grpc.CheckoutSessionsServiceStub
    links: links_grpc.PaymentLinksServiceStub
    invoices: invoices_grpc.InvoicesServiceStub
    orders: orders_grpc.OrdersServiceStub
    merchant_id: str
    db: Database

    def new_checkout(self, *, key: str | None = None, **fields: object) -> res.CheckoutSession:
        values: dict[str, object] = {
            "line_items": [
                res.LineItem(name="Blue mug", quantity=2, unit_amount=1000),
                res.LineItem(name="Gift wrap", quantity=1, unit_amount=500),
            ],
            "currency": "usd",
            "success_url": SUCCESS_URL,
            "cancel_url": CANCEL_URL,
        }
        values.update(fields)
        return self.checkout.CreateCheckoutSession(
            checkout_pb.CreateCheckoutSessionRequest(
                checkout_session=res.CheckoutSession(**values)  # type: ignore[arg-type]
            ),
            metadata=bearer(key or self.key),
        )

    def session(self, session_id: str) -> res.CheckoutSession:
        return self.checkout.GetCheckoutSession(
            checkout_pb.GetCheckoutSessionRequest(id=session_id), metadata=bearer(self.key)
        )

    def session_count(self) -> int:
        listed = self.checkout.ListCheckoutSessions(
            checkout_pb.ListCheckoutSessionsRequest(page_size=100), metadata=bearer(self.key)
        )
        return len(listed.checkout_sessions)

    def new_link(self) -> res.PaymentLink:
        return self.links.CreatePaymentLink(
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

    def new_invoice(self, *, finalize: bool = True) -> res.Invoice:
        invoice = self.invoices.CreateInvoice(
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
        if not finalize:
            return invoice
        return self.invoices.FinalizeInvoice(
            invoices_pb.FinalizeInvoiceRequest(id=invoice.id), metadata=bearer(self.key)
        )

    def get_invoice(self, invoice_id: str) -> res.Invoice:
        return self.invoices.GetInvoice(
            invoices_pb.GetInvoiceRequest(id=invoice_id), metadata=bearer(self.key)
        )

    def open_link(self, link_id: str) -> httpx.Response:
        """Opens the link's landing page and presses its button."""
        landing = self.open_form(f"/l/{link_id}")
        response: httpx.Response = self.browser.post(
            f"/l/{link_id}",
            data={"csrf_token": csrf_from(landing.text), "nonce": nonce_from(landing.text)},
        )
        return response

    def written_rows(self) -> tuple[int, int, int]:
        """The merchant's orders, checkout sessions and events, as stored."""
        with self.db.read() as session:
            return tuple(  # type: ignore[return-value]
                session.scalar(
                    select(func.count())
                    .select_from(model)
                    .where(model.merchant_id == self.merchant_id)
                )
                or 0
                for model in (OrderRecord, CheckoutSessionRecord, EventRecord)
            )

    def open_form(self, path: str) -> httpx.Response:
        page = self.browser.get(path)
        assert page.status_code == 200, page.text
        return page

    def pay(
        self,
        path: str,
        number: str = GOOD_CARD,
        expiry: str = FUTURE,
        cvc: str = CVC,
        *,
        page: httpx.Response | None = None,
    ) -> httpx.Response:
        """Opens the page (unless given) and submits its form with the card."""
        page = page or self.open_form(path)
        response: httpx.Response = self.browser.post(
            path,
            data={
                "csrf_token": csrf_from(page.text),
                "card_number": number,
                "card_expiry": expiry,
                "card_cvc": cvc,
            },
        )
        return response


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def nonce_from(html: str) -> str:
    match = NONCE_INPUT.search(html)
    assert match, "no nonce in the page"
    return match.group(1)


def card_inputs_are_empty(html: str) -> bool:
    """No card input carries a value: nothing typed is ever shown back."""
    tags = [tag for tag in INPUT_TAG.findall(html) if 'name="card_' in tag]
    assert len(tags) == 3, tags
    return all("value=" not in tag for tag in tags)


@pytest.fixture(scope="module")
def hosted_internal_key(db: Database) -> str:
    return internal_key(db)


@contextmanager
def _shop(
    port: int,
    channel: grpc.Channel,
    hosted_internal_key: str,
    accounts_stub: accounts_grpc.AccountsServiceStub,
    admin_key: str,
    db: Database,
) -> Iterator[Shop]:
    merchant = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            merchant=accounts_pb.Merchant(
                name=MERCHANT_NAME, email=f"shop-{secrets.token_hex(4)}@example.com"
            ),
            password="correct horse battery",
        ),
        metadata=bearer(admin_key),
    )
    keys = {key.environment: key.secret for key in merchant.secret_keys}
    settings = HostedSettings(
        grpc_target=f"127.0.0.1:{port}",
        internal_key=hosted_internal_key,
        public_url="http://127.0.0.1:8080",
        secret_key=SECRET,
    )
    with TestClient(create_app(settings), follow_redirects=False) as browser:
        yield Shop(
            keys[accounts_pb.ENVIRONMENT_TEST],
            keys[accounts_pb.ENVIRONMENT_LIVE],
            browser,
            checkout_grpc.CheckoutSessionsServiceStub(channel),
            links_grpc.PaymentLinksServiceStub(channel),
            invoices_grpc.InvoicesServiceStub(channel),
            orders_grpc.OrdersServiceStub(channel),
            merchant.id,
            db,
        )


@pytest.fixture
def shop(
    grpc_server: int,
    channel: grpc.Channel,
    hosted_internal_key: str,
    accounts_stub: accounts_grpc.AccountsServiceStub,
    admin_key: str,
    db: Database,
) -> Iterator[Shop]:
    with _shop(grpc_server, channel, hosted_internal_key, accounts_stub, admin_key, db) as made:
        yield made


@pytest.fixture
def acquired_shop(
    live_grpc_server: int,
    live_channel: grpc.Channel,
    hosted_internal_key: str,
    accounts_stub: accounts_grpc.AccountsServiceStub,
    admin_key: str,
    db: Database,
) -> Iterator[Shop]:
    """A shop whose core has a live-capable acquirer (the test double)."""
    with _shop(
        live_grpc_server, live_channel, hosted_internal_key, accounts_stub, admin_key, db
    ) as made:
        yield made


# --- checkout page ---------------------------------------------------------------


def test_checkout_page_shows_merchant_items_total_and_test_banner(shop: Shop) -> None:
    session = shop.new_checkout()
    page = shop.browser.get(f"/pay/{session.id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert MERCHANT_NAME in html
    assert "Blue mug" in html
    assert "× 2" in html
    assert "$20.00" in html  # 2 × $10.00
    assert "$10.00 each" in html
    assert "Gift wrap" in html
    assert "$5.00" in html
    assert "Pay $25.00" in html
    assert "TEST MODE" in html
    assert f'action="/pay/{session.id}"' in html


def test_checkout_form_has_card_autocomplete_and_numeric_keyboards(shop: Shop) -> None:
    html = shop.open_form(f"/pay/{shop.new_checkout().id}").text
    for autocomplete in ("cc-number", "cc-exp", "cc-csc"):
        (tag,) = [t for t in INPUT_TAG.findall(html) if f'autocomplete="{autocomplete}"' in t]
        assert 'inputmode="numeric"' in tag
    assert card_inputs_are_empty(html)
    assert "<script" not in html
    assert " style=" not in html


def test_checkout_page_links_cancel_to_the_merchant(shop: Shop) -> None:
    html = shop.open_form(f"/pay/{shop.new_checkout().id}").text
    assert f'<a href="{CANCEL_URL}">Cancel and return to {MERCHANT_NAME}</a>' in html


def test_checkout_without_cancel_url_has_no_cancel_link(shop: Shop) -> None:
    html = shop.open_form(f"/pay/{shop.new_checkout(cancel_url='').id}").text
    assert "Cancel and return" not in html


def test_checkout_page_csp_lets_the_form_post_and_redirect_to_the_success_page(
    shop: Shop,
) -> None:
    page = shop.open_form(f"/pay/{shop.new_checkout().id}")
    csp = page.headers["content-security-policy"]
    assert "form-action 'self' https://shop.example.com;" in csp
    assert "default-src 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-robots-tag"] == "noindex, nofollow"


def test_live_checkout_page_has_no_test_banner(acquired_shop: Shop) -> None:
    session = acquired_shop.new_checkout(key=acquired_shop.live_key)
    page = acquired_shop.browser.get(f"/pay/{session.id}")
    assert page.status_code == 200, page.text
    assert "TEST MODE" not in page.text
    assert "Pay $25.00" in page.text


def test_live_checkout_page_without_an_acquirer_says_so_instead_of_a_card_form(
    shop: Shop,
) -> None:
    session = shop.new_checkout(key=shop.live_key)
    page = shop.browser.get(f"/pay/{session.id}")
    assert page.status_code == 503, page.text
    assert "Live payments are not available" in page.text
    assert 'name="card_number"' not in page.text
    assert "Pay $25.00" not in page.text


def test_live_checkout_post_without_an_acquirer_takes_no_payment(shop: Shop) -> None:
    session = shop.new_checkout(key=shop.live_key)
    response = shop.browser.post(
        f"/pay/{session.id}",
        data={"card_number": GOOD_CARD, "card_expiry": FUTURE, "card_cvc": CVC},
    )
    # Without a valid form token it is shown the page again, which says why.
    assert response.status_code == 503, response.text
    assert "Live payments are not available" in response.text


def test_amounts_use_the_currency_decimals(shop: Shop) -> None:
    session = shop.new_checkout(
        currency="jpy", line_items=[res.LineItem(name="Tea set", quantity=1, unit_amount=4500)]
    )
    html = shop.open_form(f"/pay/{session.id}").text
    assert "Pay ¥4,500" in html
    assert "¥45.00" not in html


def test_unknown_checkout_is_a_404_page(shop: Shop) -> None:
    page = shop.browser.get("/pay/cs_01jzzzzzzzzzzzzzzzzzzzzzzz")
    assert page.status_code == 404
    assert "Payment page not found" in page.text


def test_anonymous_browser_gets_a_csrf_cookie_and_no_session(shop: Shop) -> None:
    page = shop.open_form(f"/pay/{shop.new_checkout().id}")
    cookies = page.headers.get_list("set-cookie")
    assert any(c.startswith("flint_csrf=") and "HttpOnly" in c for c in cookies), cookies
    assert not any(c.startswith("flint_session=") for c in cookies)


# --- paying a checkout -----------------------------------------------------------


def test_paying_with_4242_redirects_to_the_success_url(shop: Shop) -> None:
    session = shop.new_checkout()
    paid = shop.pay(f"/pay/{session.id}")
    assert paid.status_code == 303, paid.text
    assert paid.headers["location"] == SUCCESS_URL
    assert shop.session(session.id).status == res.CHECKOUT_SESSION_STATUS_COMPLETE


def test_paid_checkout_shows_the_paid_page(shop: Shop) -> None:
    session = shop.new_checkout()
    assert shop.pay(f"/pay/{session.id}").status_code == 303
    page = shop.browser.get(f"/pay/{session.id}")
    assert page.status_code == 200
    assert "Payment complete" in page.text
    assert f"{MERCHANT_NAME} has received your payment of $25.00" in page.text
    assert f'href="{SUCCESS_URL}"' in page.text
    assert "card_number" not in page.text  # no form


def test_declined_card_shows_the_reason_and_the_session_stays_open(shop: Shop) -> None:
    session = shop.new_checkout()
    declined = shop.pay(f"/pay/{session.id}", DECLINED_CARD)
    assert declined.status_code == 402, declined.text
    assert "Your card was declined." in declined.text
    assert "4000" not in declined.text
    assert card_inputs_are_empty(declined.text)
    assert shop.session(session.id).status == res.CHECKOUT_SESSION_STATUS_OPEN
    # The re-shown form still allows the success redirect, and works.
    assert "https://shop.example.com" in declined.headers["content-security-policy"]
    paid = shop.pay(f"/pay/{session.id}", page=declined)
    assert paid.status_code == 303, paid.text
    assert paid.headers["location"] == SUCCESS_URL


def test_insufficient_funds_says_so(shop: Shop) -> None:
    declined = shop.pay(f"/pay/{shop.new_checkout().id}", NO_FUNDS_CARD)
    assert declined.status_code == 402, declined.text
    assert "Your card has insufficient funds." in declined.text


def test_card_number_failing_the_check_digit_is_shown_next_to_the_number(shop: Shop) -> None:
    session = shop.new_checkout()
    refused = shop.pay(f"/pay/{session.id}", LUHN_FAILS)
    assert refused.status_code == 400, refused.text
    assert re.search(r'id="card-number-error">Your card number is invalid\.</p>', refused.text), (
        refused.text
    )
    assert LUHN_FAILS not in refused.text
    assert card_inputs_are_empty(refused.text)
    assert shop.session(session.id).status == res.CHECKOUT_SESSION_STATUS_OPEN


def test_expired_card_is_shown_next_to_the_expiry_date(shop: Shop) -> None:
    refused = shop.pay(f"/pay/{shop.new_checkout().id}", expiry="01/20")
    assert refused.status_code == 400, refused.text
    assert re.search(r'id="card-expiry-error">Your card has expired\.</p>', refused.text), (
        refused.text
    )


@pytest.mark.parametrize("expiry", ["13/30", "00/30", "1/2", "next year", "12/3456"])
def test_expiry_that_is_not_a_month_and_year_is_refused(shop: Shop, expiry: str) -> None:
    refused = shop.pay(f"/pay/{shop.new_checkout().id}", expiry=expiry)
    assert refused.status_code == 400, refused.text
    assert 'id="card-expiry-error">Enter the expiry date as MM/YY' in refused.text


def test_empty_form_names_every_missing_field(shop: Shop) -> None:
    refused = shop.pay(f"/pay/{shop.new_checkout().id}", number="", expiry="", cvc="")
    assert refused.status_code == 400, refused.text
    assert "Enter your card number." in refused.text
    assert "Enter your card&#39;s expiry date." in refused.text
    assert "Enter your card&#39;s security code (CVC)." in refused.text
    assert refused.text.count('aria-invalid="true"') == 3


def test_cvc_that_is_not_three_or_four_digits_is_refused(shop: Shop) -> None:
    refused = shop.pay(f"/pay/{shop.new_checkout().id}", cvc="12a")
    assert refused.status_code == 400, refused.text
    assert 'id="card-cvc-error"' in refused.text


def test_paying_again_after_paying_shows_the_paid_page(shop: Shop) -> None:
    session = shop.new_checkout()
    page = shop.open_form(f"/pay/{session.id}")
    assert shop.pay(f"/pay/{session.id}", page=page).status_code == 303
    again = shop.pay(f"/pay/{session.id}", page=page)
    assert again.status_code == 200, again.text
    assert "Payment complete" in again.text


def test_post_without_csrf_token_pays_nothing_and_offers_a_fresh_form(shop: Shop) -> None:
    session = shop.new_checkout()
    shop.open_form(f"/pay/{session.id}")
    refused = shop.browser.post(
        f"/pay/{session.id}",
        data={"card_number": GOOD_CARD, "card_expiry": FUTURE, "card_cvc": CVC},
    )
    assert refused.status_code == 403, refused.text
    assert "this form has expired" in refused.text
    assert card_inputs_are_empty(refused.text)
    assert shop.session(session.id).status == res.CHECKOUT_SESSION_STATUS_OPEN
    paid = shop.pay(f"/pay/{session.id}", page=refused)
    assert paid.status_code == 303, paid.text


def test_csrf_token_of_another_browser_is_refused(shop: Shop) -> None:
    session = shop.new_checkout()
    token = csrf_from(shop.open_form(f"/pay/{session.id}").text)
    shop.browser.cookies.clear()
    shop.open_form(f"/pay/{session.id}")  # a new browser cookie
    refused = shop.browser.post(
        f"/pay/{session.id}",
        data={
            "csrf_token": token,
            "card_number": GOOD_CARD,
            "card_expiry": FUTURE,
            "card_cvc": CVC,
        },
    )
    assert refused.status_code == 403
    assert shop.session(session.id).status == res.CHECKOUT_SESSION_STATUS_OPEN


def test_expired_checkout_is_410_on_the_page_and_on_pay(shop: Shop) -> None:
    session = shop.new_checkout()
    page = shop.open_form(f"/pay/{session.id}")
    shop.checkout.ExpireCheckoutSession(
        checkout_pb.ExpireCheckoutSessionRequest(id=session.id), metadata=bearer(shop.key)
    )
    shown = shop.browser.get(f"/pay/{session.id}")
    assert shown.status_code == 410
    assert "This checkout has expired" in shown.text
    assert f'href="{CANCEL_URL}"' in shown.text
    posted = shop.pay(f"/pay/{session.id}", page=page)
    assert posted.status_code == 410, posted.text
    assert "This checkout has expired" in posted.text


def test_checkout_of_a_canceled_order_cannot_be_paid(shop: Shop) -> None:
    session = shop.new_checkout()
    shop.orders.CancelOrder(
        orders_pb.CancelOrderRequest(id=session.order_id), metadata=bearer(shop.key)
    )
    shown = shop.browser.get(f"/pay/{session.id}")
    assert shown.status_code == 410
    assert "can no longer be paid" in shown.text
    assert "card_number" not in shown.text


def test_two_submissions_at_once_pay_once(shop: Shop) -> None:
    session = shop.new_checkout()
    page = shop.open_form(f"/pay/{session.id}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: shop.pay(f"/pay/{session.id}", page=page), range(4)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(303) == 1, [(a.status_code, a.text[:300]) for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert "A payment is already in progress" in answer.text
        elif answer.status_code == 200:
            assert "Payment complete" in answer.text
        else:
            assert answer.status_code == 303
    order = shop.orders.GetOrder(
        orders_pb.GetOrderRequest(id=session.order_id), metadata=bearer(shop.key)
    )
    succeeded = [p for p in order.payments if p.status == res.PAYMENT_STATUS_SUCCEEDED]
    assert len(succeeded) == 1


def test_card_number_and_cvc_are_never_logged(shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    session = shop.new_checkout()
    page = shop.open_form(f"/pay/{session.id}")
    with caplog.at_level(logging.DEBUG):
        declined = shop.pay(f"/pay/{session.id}", DECLINED_CARD, cvc="7351", page=page)
        refused = shop.pay(f"/pay/{session.id}", LUHN_FAILS, cvc="7351", page=declined)
        paid = shop.pay(f"/pay/{session.id}", GOOD_CARD, cvc="7351", page=refused)
    assert (declined.status_code, refused.status_code, paid.status_code) == (402, 400, 303)
    logged = "\n".join(
        f"{record.getMessage()} {getattr(record, 'fields', {})}" for record in caplog.records
    )
    assert "http_request" in logged
    assert "card_declined" in logged  # the outcome is logged…
    for secret in ("4000000000000002", "4242424242424241", "4242424242424242", "4242 4242"):
        assert secret not in logged  # …never the card
    # The CVC as a value of its own: random ids and tokens in the log may hold
    # the same four digits inside them.
    assert not re.search(r"(?<![\w-])7351(?![\w-])", logged)


# --- payment links ---------------------------------------------------------------


def test_payment_link_landing_shows_products_and_a_pay_button(shop: Shop) -> None:
    link = shop.new_link()
    page = shop.browser.get(f"/l/{link.id}")
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-robots-tag"] == "noindex, nofollow"
    html = page.text
    assert MERCHANT_NAME in html
    assert "Workshop ticket" in html
    assert "$49.00" in html
    assert "TEST MODE" in html
    assert f'action="/l/{link.id}"' in html
    assert "Continue to payment" in html
    assert 'name="card_number"' not in html  # the card is asked for on the checkout page


def test_sixty_visits_of_a_payment_link_write_nothing(shop: Shop) -> None:
    link = shop.new_link()
    before = shop.written_rows()
    for _ in range(60):
        assert shop.browser.get(f"/l/{link.id}").status_code == 200
    assert shop.written_rows() == before


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-purpose": "prefetch;prerender"},
        {"user-agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"},
        {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"},
    ],
)
def test_prefetches_and_robots_see_the_landing_page_and_write_nothing(
    shop: Shop, headers: dict[str, str]
) -> None:
    link = shop.new_link()
    before = shop.written_rows()
    answer = shop.browser.get(f"/l/{link.id}", headers=headers)
    assert answer.status_code == 200
    assert "Workshop ticket" in answer.text
    assert shop.written_rows() == before


def test_head_of_a_payment_link_writes_nothing(shop: Shop) -> None:
    link = shop.new_link()
    before = shop.written_rows()
    answer = shop.browser.head(f"/l/{link.id}")
    assert answer.status_code == 200
    assert shop.written_rows() == before


def test_pressing_pay_opens_a_checkout_that_can_be_paid(shop: Shop) -> None:
    link = shop.new_link()
    before = shop.written_rows()
    opened = shop.open_link(link.id)
    assert opened.status_code == 303, opened.text
    assert opened.headers["cache-control"] == "no-store"
    assert opened.headers["location"].startswith("/pay/cs_")
    orders, sessions, _events = shop.written_rows()
    assert (orders, sessions) == (before[0] + 1, before[1] + 1)
    page = shop.open_form(opened.headers["location"])
    assert "Workshop ticket" in page.text
    assert "Pay $49.00" in page.text
    paid = shop.pay(opened.headers["location"], page=page)
    assert paid.status_code == 303, paid.text
    assert paid.headers["location"] == SUCCESS_URL


def test_each_landing_form_opens_its_own_checkout(shop: Shop) -> None:
    link = shop.new_link()
    first = shop.open_link(link.id)
    second = shop.open_link(link.id)
    assert first.headers["location"] != second.headers["location"]


def test_a_double_submitted_landing_form_opens_one_checkout(shop: Shop) -> None:
    link = shop.new_link()
    landing = shop.browser.get(f"/l/{link.id}")
    form = {"csrf_token": csrf_from(landing.text), "nonce": nonce_from(landing.text)}
    before = shop.written_rows()
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: shop.browser.post(f"/l/{link.id}", data=form), range(2)))
    again = shop.browser.post(f"/l/{link.id}", data=form)
    # Concurrent submits: one opens the session, the other gets the same one
    # (or is told the first is still being opened).
    locations = {a.headers["location"] for a in [*answers, again] if a.status_code == 303}
    assert len(locations) == 1, [a.status_code for a in answers]
    assert {a.status_code for a in answers} <= {303, 409}
    assert again.status_code == 303
    orders, sessions, _events = shop.written_rows()
    assert (orders, sessions) == (before[0] + 1, before[1] + 1)


def test_pressing_pay_without_csrf_token_opens_nothing(shop: Shop) -> None:
    link = shop.new_link()
    landing = shop.browser.get(f"/l/{link.id}")
    before = shop.written_rows()
    answer = shop.browser.post(f"/l/{link.id}", data={"nonce": nonce_from(landing.text)})
    assert answer.status_code == 403
    assert "this page has expired" in answer.text
    assert "Continue to payment" in answer.text  # a fresh form to press again
    assert shop.written_rows() == before


def test_pressing_pay_without_a_nonce_opens_nothing(shop: Shop) -> None:
    link = shop.new_link()
    landing = shop.browser.get(f"/l/{link.id}")
    before = shop.written_rows()
    answer = shop.browser.post(f"/l/{link.id}", data={"csrf_token": csrf_from(landing.text)})
    assert answer.status_code == 403
    assert shop.written_rows() == before


def test_inactive_payment_link_says_it_is_no_longer_active(shop: Shop) -> None:
    link = shop.new_link()
    landing = shop.browser.get(f"/l/{link.id}")
    shop.links.UpdatePaymentLink(
        links_pb.UpdatePaymentLinkRequest(
            payment_link=res.PaymentLink(id=link.id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=bearer(shop.key),
    )
    before = shop.written_rows()
    page = shop.browser.get(f"/l/{link.id}")
    assert page.status_code == 410, page.text
    assert "This link is no longer active" in page.text
    assert page.headers["cache-control"] == "no-store"
    # A landing page opened before the link was turned off opens nothing either.
    pressed = shop.browser.post(
        f"/l/{link.id}",
        data={"csrf_token": csrf_from(landing.text), "nonce": nonce_from(landing.text)},
    )
    assert pressed.status_code == 410
    assert shop.written_rows() == before


def test_unknown_payment_link_is_a_404_page(shop: Shop) -> None:
    page = shop.browser.get("/l/plink_01jzzzzzzzzzzzzzzzzzzzzzzz")
    assert page.status_code == 404
    assert "Payment page not found" in page.text


# --- invoices --------------------------------------------------------------------


def test_invoice_page_shows_number_due_date_items_total_and_test_banner(shop: Shop) -> None:
    invoice = shop.new_invoice()
    page = shop.browser.get(f"/i/{invoice.id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert invoice.number
    assert f"Invoice {invoice.number}" in html
    assert "Due March 5, 2031" in html
    assert "Consulting, March" in html
    assert "× 3" in html
    assert "Pay $360.00" in html
    assert "TEST MODE" in html
    assert f'action="/i/{invoice.id}"' in html
    assert 'autocomplete="cc-number"' in html


def test_paying_an_invoice_marks_it_paid_and_shows_the_paid_page(shop: Shop) -> None:
    invoice = shop.new_invoice()
    paid = shop.pay(f"/i/{invoice.id}")
    assert paid.status_code == 303, paid.text
    assert shop.get_invoice(invoice.id).status == res.INVOICE_STATUS_PAID
    page = shop.browser.get(f"/i/{invoice.id}")
    assert page.status_code == 200
    assert f"Invoice {invoice.number} is paid" in page.text
    assert "card_number" not in page.text


def test_declined_invoice_payment_shows_the_reason(shop: Shop) -> None:
    invoice = shop.new_invoice()
    declined = shop.pay(f"/i/{invoice.id}", DECLINED_CARD)
    assert declined.status_code == 402, declined.text
    assert "Your card was declined." in declined.text
    assert f"Invoice {invoice.number}" in declined.text
    assert shop.get_invoice(invoice.id).status == res.INVOICE_STATUS_OPEN


def test_invalid_card_on_an_invoice_is_shown_next_to_the_field(shop: Shop) -> None:
    refused = shop.pay(f"/i/{shop.new_invoice().id}", LUHN_FAILS)
    assert refused.status_code == 400, refused.text
    assert 'id="card-number-error">Your card number is invalid.' in refused.text


def test_void_invoice_shows_the_closed_page(shop: Shop) -> None:
    invoice = shop.new_invoice()
    page = shop.open_form(f"/i/{invoice.id}")
    shop.invoices.VoidInvoice(
        invoices_pb.VoidInvoiceRequest(id=invoice.id), metadata=bearer(shop.key)
    )
    shown = shop.browser.get(f"/i/{invoice.id}")
    assert shown.status_code == 410
    assert f"Invoice {invoice.number} is closed" in shown.text
    posted = shop.pay(f"/i/{invoice.id}", page=page)
    assert posted.status_code == 410, posted.text
    assert shop.get_invoice(invoice.id).status == res.INVOICE_STATUS_VOID


def test_uncollectible_invoice_shows_the_closed_page(shop: Shop) -> None:
    invoice = shop.new_invoice()
    shop.invoices.MarkUncollectibleInvoice(
        invoices_pb.MarkUncollectibleInvoiceRequest(id=invoice.id), metadata=bearer(shop.key)
    )
    shown = shop.browser.get(f"/i/{invoice.id}")
    assert shown.status_code == 410
    assert "is closed" in shown.text


def test_draft_invoice_has_no_payment_page(shop: Shop) -> None:
    draft = shop.new_invoice(finalize=False)
    shown = shop.browser.get(f"/i/{draft.id}")
    assert shown.status_code in (404, 410), shown.text
    assert "card_number" not in shown.text


def test_unknown_invoice_is_a_404_page(shop: Shop) -> None:
    page = shop.browser.get("/i/in_01jzzzzzzzzzzzzzzzzzzzzzzz")
    assert page.status_code == 404
    assert "Payment page not found" in page.text
