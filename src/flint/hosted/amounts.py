"""Amounts for people: integer minor units and an ISO 4217 code, shown the way
shoppers read prices ("$25.00", "¥1,234", "KWD 1,234.567"), with the number of
decimals each currency has (from CLDR, via Babel). Never floats."""

from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision

# English formatting: the pages are in English, so "$25.00" rather than "25,00 $".
LOCALE = "en_US"
NO_BREAK_SPACE = "\u00a0"
_CODE = re.compile(r"^[A-Za-z]{3}$")
# A symbol that is a code ("KWD1.000") is set apart from the digits as CLDR's
# currency spacing asks, which Babel does not apply.
_CODE_AGAINST_DIGIT = re.compile(r"^(-?[A-Za-z]+)(?=\d)")


def format_amount(amount: int, currency: str) -> str:
    """`amount` minor units of `currency` (any case) as a price: 2500 "usd" → "$25.00"."""
    if not _CODE.match(currency):
        # Not a currency code at all; say plainly what the core sent.
        return f"{amount} {currency}".strip()
    code = currency.upper()
    digits = get_currency_precision(code)
    value = Decimal(amount).scaleb(-digits)
    text = format_currency(value, code, locale=LOCALE, currency_digits=True)
    return _CODE_AGAINST_DIGIT.sub(lambda match: match.group(1) + NO_BREAK_SPACE, text)
