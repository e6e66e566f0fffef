"""The card form of the hosted payment pages: reading it, and every problem with
it in plain words for the buyer.

The card number and CVC only pass through: they go into the request to the
core and nowhere else. They are never logged, never put in an error, and never
rendered back into a page (a re-shown form is always empty)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.datastructures import FormData

from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.hosted.core import FieldViolation
from flint.hosted.pages import form_text

NUMBER_FIELD = "card_number"
EXPIRY_FIELD = "card_expiry"
CVC_FIELD = "card_cvc"

# The inputs of the form, named as the template's error slots.
NUMBER, EXPIRY, CVC = "number", "expiry", "cvc"

# Longer than any card number with separators; anything beyond is not one.
MAX_NUMBER_LENGTH = 32
# Spaces and dashes are how people copy card numbers; nothing else is removed.
_NUMBER_SEPARATORS = re.compile(r"[\s-]+")
# "MM/YY", "MM / YY", "M/YY", "MM/YYYY", "MM-YY", and "MMYY" as autofill may send.
_EXPIRY = re.compile(r"^(?P<month>\d{1,2})\s*[/-]\s*(?P<year>\d{2}|\d{4})$")
_EXPIRY_DIGITS = re.compile(r"^(?P<month>\d{2})(?P<year>\d{2})$")
_CVC = re.compile(r"^\d{3,4}$")

REQUIRED_MESSAGES = {
    NUMBER: "Enter your card number.",
    EXPIRY: "Enter your card's expiry date.",
    CVC: "Enter your card's security code (CVC).",
}
# What to say when the core refuses an input for a reason this app does not know.
FALLBACK_MESSAGES = {
    NUMBER: "Check your card number.",
    EXPIRY: "Check your card's expiry date.",
    CVC: "Check your card's security code (CVC).",
}
INVALID_NUMBER_MESSAGE = "Your card number is invalid."
INVALID_EXPIRY_MESSAGE = "Enter the expiry date as MM/YY, e.g. 04/29."
INVALID_CVC_MESSAGE = "The security code is the 3 or 4 digits on your card."
EXPIRED_MESSAGE = "Your card has expired."

# The core's field paths (BadRequest) → the input they belong to.
CORE_FIELDS = {
    "card.number": NUMBER,
    "card.exp_month": EXPIRY,
    "card.exp_year": EXPIRY,
    "card.cvc": CVC,
}
# The core's reasons for refusing a card input → plain words.
CORE_REASON_MESSAGES = {
    "INVALID_CARD_NUMBER": INVALID_NUMBER_MESSAGE,
    "CARD_EXPIRED": EXPIRED_MESSAGE,
    "INVALID_EXPIRY": INVALID_EXPIRY_MESSAGE,
    "INVALID_EXP_MONTH": INVALID_EXPIRY_MESSAGE,
    "INVALID_EXP_YEAR": INVALID_EXPIRY_MESSAGE,
    "INVALID_CVC": INVALID_CVC_MESSAGE,
}

# Decline codes → what the buyer reads. Codes that must not be explained to
# whoever holds the card (lost, stolen, fraud) get the generic sentence.
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "incorrect_number": "Your card number is incorrect.",
    "processing_error": "An error occurred while processing your card. Please try again.",
    "card_not_supported": "Your card does not support this type of purchase.",
    "currency_not_supported": "Your card does not support this currency.",
}
GENERIC_DECLINE = "Your card was declined."


@dataclass
class CardForm:
    """What was read from the form: the card for the core, or what is wrong."""

    card: pay_pb.CardDetails | None
    errors: dict[str, str] = field(default_factory=dict)


def read_card(form: FormData) -> CardForm:
    """Checks the shape of each input (present, digits, MM/YY). Whether the
    number is a card number and the card is unexpired is the core's call."""
    errors: dict[str, str] = {}
    number = _NUMBER_SEPARATORS.sub("", form_text(form, NUMBER_FIELD))
    if not number:
        errors[NUMBER] = REQUIRED_MESSAGES[NUMBER]
    elif not number.isascii() or not number.isdigit() or len(number) > MAX_NUMBER_LENGTH:
        errors[NUMBER] = INVALID_NUMBER_MESSAGE

    expiry = form_text(form, EXPIRY_FIELD).strip()
    month = year = 0
    if not expiry:
        errors[EXPIRY] = REQUIRED_MESSAGES[EXPIRY]
    else:
        parsed = parse_expiry(expiry)
        if parsed is None:
            errors[EXPIRY] = INVALID_EXPIRY_MESSAGE
        else:
            month, year = parsed

    cvc = form_text(form, CVC_FIELD).strip()
    if not cvc:
        errors[CVC] = REQUIRED_MESSAGES[CVC]
    elif not cvc.isascii() or not _CVC.match(cvc):
        errors[CVC] = INVALID_CVC_MESSAGE

    if errors:
        return CardForm(None, errors)
    return CardForm(pay_pb.CardDetails(number=number, exp_month=month, exp_year=year, cvc=cvc))


def parse_expiry(text: str) -> tuple[int, int] | None:
    """(month, four-digit year) of "MM/YY" or "MM/YYYY"; two-digit years are 20YY."""
    if not text.isascii():
        return None
    match = _EXPIRY.match(text) or _EXPIRY_DIGITS.match(text)
    if match is None:
        return None
    year_text = match.group("year")
    month, year = int(match.group("month")), int(year_text)
    if not 1 <= month <= 12:
        return None
    if len(year_text) == 2:
        year += 2000
    return month, year


def violation_errors(violations: Iterable[FieldViolation]) -> dict[str, str]:
    """The core's field violations on the card, by input; the first per input wins."""
    errors: dict[str, str] = {}
    for violation in violations:
        slot = CORE_FIELDS.get(violation.field)
        if slot is None or slot in errors:
            continue
        if violation.reason == "FIELD_REQUIRED":
            errors[slot] = REQUIRED_MESSAGES[slot]
        else:
            errors[slot] = CORE_REASON_MESSAGES.get(violation.reason, FALLBACK_MESSAGES[slot])
    return errors


def decline_message(decline_code: str) -> str:
    return DECLINE_MESSAGES.get(decline_code, GENERIC_DECLINE)
