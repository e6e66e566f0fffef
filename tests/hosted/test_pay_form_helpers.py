"""The pieces of the payment pages that need no core: amounts, the card form,
the core's refusals in plain words, merchant URLs, and prefetch detection."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.datastructures import FormData
from starlette.exceptions import StarletteDeprecationWarning

from flint.hosted import HostedSettings, create_app
from flint.hosted.amounts import format_amount
from flint.hosted.card_form import decline_message, parse_expiry, read_card, violation_errors
from flint.hosted.core import CoreError, FieldViolation
from flint.hosted.pay import due_date_text
from flint.hosted.security import web_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (2500, "usd", "$25.00"),
        (2500, "USD", "$25.00"),
        (5, "usd", "$0.05"),
        (123456789, "eur", "€1,234,567.89"),
        (4500, "jpy", "¥4,500"),
        (1234567, "kwd", "KWD\u00a01,234.567"),
        (2500, "chf", "CHF\u00a025.00"),
        (2500, "gbp", "£25.00"),
    ],
)
def test_amounts_are_minor_units_with_the_currency_decimals(
    amount: int, currency: str, shown: str
) -> None:
    assert format_amount(amount, currency) == shown


def test_an_amount_in_something_that_is_no_currency_code_is_shown_plainly() -> None:
    assert format_amount(2500, "") == "2500"
    assert format_amount(2500, "us dollars") == "2500 us dollars"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("12/34", (12, 2034)),
        ("1/34", (1, 2034)),
        ("01 / 34", (1, 2034)),
        ("01/2034", (1, 2034)),
        ("0134", (1, 2034)),
        ("01-34", (1, 2034)),
    ],
)
def test_expiry_is_month_and_year_with_two_digit_years_in_this_century(
    text: str, parsed: tuple[int, int]
) -> None:
    assert parse_expiry(text) == parsed


@pytest.mark.parametrize("text", ["13/34", "00/34", "12/3", "12/345", "1234/5", "１２/34", "ab/cd"])
def test_expiry_that_is_not_mm_yy_is_refused(text: str) -> None:
    assert parse_expiry(text) is None


def _form(**fields: str) -> FormData:
    return FormData(list(fields.items()))


def test_card_form_strips_spaces_and_dashes_from_the_number() -> None:
    read = read_card(_form(card_number="4242 4242-4242 4242", card_expiry="04/29", card_cvc="123"))
    assert read.errors == {}
    assert read.card is not None
    assert read.card.number == "4242424242424242"
    assert (read.card.exp_month, read.card.exp_year, read.card.cvc) == (4, 2029, "123")


def test_card_form_names_every_problem_at_once() -> None:
    read = read_card(_form(card_number="4242x", card_expiry="99/99", card_cvc="12"))
    assert read.card is None
    assert set(read.errors) == {"number", "expiry", "cvc"}


def test_missing_card_fields_are_required() -> None:
    read = read_card(_form())
    assert read.errors == {
        "number": "Enter your card number.",
        "expiry": "Enter your card's expiry date.",
        "cvc": "Enter your card's security code (CVC).",
    }


def test_core_violations_land_next_to_their_input() -> None:
    errors = violation_errors(
        [
            FieldViolation("card.number", "INVALID_CARD_NUMBER", "fails the Luhn check"),
            FieldViolation("card.exp_year", "CARD_EXPIRED", "is in the past"),
            FieldViolation("card.exp_month", "SOMETHING_ELSE", "ignored: expiry already set"),
            FieldViolation("card.cvc", "A_REASON_NOT_KNOWN_HERE", "x"),
            FieldViolation("id", "FIELD_REQUIRED", "not a card input"),
        ]
    )
    assert errors == {
        "number": "Your card number is invalid.",
        "expiry": "Your card has expired.",
        "cvc": "Check your card's security code (CVC).",
    }


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("card_declined", "Your card was declined."),
        ("insufficient_funds", "Your card has insufficient funds."),
        ("expired_card", "Your card has expired."),
        ("incorrect_cvc", "Your card's security code is incorrect."),
        ("stolen_card", "Your card was declined."),
        ("", "Your card was declined."),
    ],
)
def test_decline_codes_in_plain_words(code: str, message: str) -> None:
    assert decline_message(code) == message


def test_core_error_carries_error_info_and_field_violations() -> None:
    info, bad_request = any_pb2.Any(), any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INVALID_CARD_NUMBER", domain="flint.dev"))
    bad_request.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="card.number", reason="INVALID_CARD_NUMBER", description="bad"
                )
            ]
        )
    )
    status = rpc_status.to_status(
        status_pb2.Status(code=3, message="card.number: bad", details=[info, bad_request])
    )

    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return status.code

        def details(self) -> str:
            return status.details

        def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
            return tuple(status.trailing_metadata)

    error = CoreError.from_rpc_error(Failed())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_CARD_NUMBER"
    assert error.violations == (FieldViolation("card.number", "INVALID_CARD_NUMBER", "bad"),)


@pytest.mark.parametrize(
    ("value", "due"),
    [("2031-03-05", "March 5, 2031"), ("soon", "soon")],
)
def test_due_dates_read_as_words(value: str, due: str) -> None:
    assert due_date_text(value) == due


@pytest.mark.parametrize(
    "url",
    ["https://shop.example.com/thanks?x=1", "http://localhost:3000/done"],
)
def test_merchant_web_urls_are_kept(url: str) -> None:
    assert web_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "javascript:alert(1)",
        "data:text/html,hi",
        "//evil.example.com/",
        "/relative",
        "https://shop.example.com/a b",
        "https://shop.example.com/\r\nSet-Cookie: x=1",
        "https:///nohost",
        "ftp://files.example.com/",
    ],
)
def test_urls_a_page_must_not_link_to_are_dropped(url: str) -> None:
    assert web_url(url) == ""


@pytest.fixture
def coreless() -> Iterator[TestClient]:
    """The app with a core address where nothing listens."""
    settings = HostedSettings(
        grpc_target="127.0.0.1:9",
        internal_key="fik_internal_test_key",
        public_url="http://127.0.0.1:8080",
        secret_key="x" * 40,
        rpc_timeout_seconds=2,
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize(
    "path", ["/pay/cs_01jzzzzzzzzzzzzzzzzzzzzzzz", "/i/in_01jzzzzzzzzzzzzzzzzzzzzzzz"]
)
def test_pay_pages_answer_503_when_the_core_is_down(coreless: TestClient, path: str) -> None:
    page = coreless.get(path)
    assert page.status_code == 503
    assert "temporarily unavailable" in page.text
    assert page.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    "path",
    [
        "/pay/cs%20x%3Cscript%3E",
        "/pay/cs_x%0A",
        "/pay/" + "a" * 101,
        "/i/in-x",
        "/l/plink_%C3%A9",
    ],
)
def test_malformed_ids_are_404_without_asking_the_core(coreless: TestClient, path: str) -> None:
    # The core is unreachable here, so any call to it would answer 503.
    page = coreless.get(path)
    assert page.status_code == 404
    assert "Payment page not found" in page.text
    assert "<script>" not in page.text


def test_a_malformed_id_posted_to_is_404_without_asking_the_core(coreless: TestClient) -> None:
    assert coreless.post("/pay/cs%20x", data={"card_number": "4242"}).status_code == 404
