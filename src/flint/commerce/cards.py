"""Card input checks. The full number and the CVC go to the processor and
nowhere else: never stored, never logged."""

from __future__ import annotations

from datetime import datetime

from flint.commerce.processor import Card
from flint.common.errors import Violations


def luhn_valid(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def parse_card(number: str, exp_month: int, exp_year: int, cvc: str, now: datetime) -> Card:
    digits = "".join(number.split())
    violations = Violations()
    if not digits.isdigit() or not 12 <= len(digits) <= 19 or not luhn_valid(digits):
        violations.add("card.number", "INVALID_CARD_NUMBER", "is not a valid card number")
    if not 1 <= exp_month <= 12:
        violations.add("card.exp_month", "INVALID_EXPIRY", "must be a month from 1 to 12")
    elif (exp_year, exp_month) < (now.year, now.month):
        violations.add("card.exp_year", "CARD_EXPIRED", "the card has expired")
    elif exp_year > now.year + 50:
        violations.add("card.exp_year", "INVALID_EXPIRY", "is too far in the future")
    if not (cvc.isdigit() and 3 <= len(cvc) <= 4):
        violations.add("card.cvc", "INVALID_CVC", "must be 3 or 4 digits")
    violations.raise_if_any()
    return Card(digits, exp_month, exp_year, cvc)
