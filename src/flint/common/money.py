"""Money: integer minor units and ISO 4217 currencies (from CLDR, via Babel).
Never floats."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import cache

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies

from flint.common.errors import Violations

MAX_AMOUNT = 2**63 - 1  # amounts are int64 on the wire and in the database


@cache
def currencies() -> frozenset[str]:
    """Currencies in use as legal tender somewhere today (upper case)."""
    today = date.today()
    codes: set[str] = set()
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, today, tender=True))
    return frozenset(codes)


def normalize_currency(code: str) -> str:
    """Flint stores and returns currencies in lower case, as Stripe does."""
    return code.strip().lower()


def check_currency(violations: Violations, fld: str, code: str) -> None:
    if not code:
        violations.add(fld, "FIELD_REQUIRED", "is required")
    elif code.strip().upper() not in currencies():
        violations.add(fld, "UNKNOWN_CURRENCY", f"{code!r} is not an ISO 4217 currency")


def check_amount(violations: Violations, fld: str, amount: int) -> None:
    if amount <= 0:
        violations.add(fld, "AMOUNT_NOT_POSITIVE", "must be a positive integer in minor units")
    elif amount > MAX_AMOUNT:
        violations.add(fld, "AMOUNT_TOO_LARGE", "is larger than the largest amount (int64)")


def display(amount: int, currency: str) -> str:
    """A human form: "1,025.00 USD" (exact: Decimal, not float)."""
    code = currency.upper()
    digits = get_currency_precision(code)
    return f"{Decimal(amount).scaleb(-digits):,.{digits}f} {code}"
