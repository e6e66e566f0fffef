"""Money: integer minor units and ISO 4217 currencies (from CLDR, via Babel).
Never floats."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import cache

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies

from flint.common.errors import Code, FlintError, Violations

# Amounts are int64 on the wire and in the database; no sum may pass this either.
INT64_MAX = 2**63 - 1
# The platform's amount ceiling, in minor units, by the currency's number of
# decimals. Like Stripe: eight digits (99,999,999 = $999,999.99, ¥99,999,999);
# three-decimal currencies (KWD, BHD, …) get nine, so their ceiling is the same
# 999,999.999 in major units. It bounds every amount a caller sets and every
# total Flint computes from them (order and invoice totals, billing periods), so
# no sum of a few of them can come near int64.
CEILINGS = {0: 99_999_999, 2: 99_999_999, 3: 999_999_999, 4: 999_999_999}
# The largest ceiling of any currency: for checks made before the currency is known.
MAX_AMOUNT = max(CEILINGS.values())
AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"


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


def known_currency(code: str) -> str:
    """`code` when it is a currency, else "" (its ceiling is then unknown)."""
    return code if code.strip().upper() in currencies() else ""


def ceiling(currency: str) -> int:
    """The largest amount (minor units) Flint accepts or computes in `currency`."""
    return CEILINGS.get(get_currency_precision(currency.strip().upper()), CEILINGS[2])


def check_amount(violations: Violations, fld: str, amount: int, currency: str = "") -> None:
    """A positive amount under the ceiling (of `currency`; of any currency when
    it is not known yet)."""
    if amount <= 0:
        violations.add(fld, "AMOUNT_NOT_POSITIVE", "must be a positive integer in minor units")
    else:
        check_ceiling(violations, fld, amount, currency)


def check_ceiling(violations: Violations, fld: str, amount: int, currency: str = "") -> None:
    """Adds AMOUNT_TOO_LARGE when `amount` (given or computed) passes the ceiling."""
    limit = ceiling(currency) if currency.strip() else MAX_AMOUNT
    if amount > limit:
        violations.add(fld, AMOUNT_TOO_LARGE, f"must be at most {limit} (minor units)")


def over_ceiling(what: str, amount: int, currency: str) -> FlintError:
    """The refusal of a sum Flint computed (a total, a period's usage) that
    passes the ceiling: the work is refused, never stored or crashed on."""
    limit = ceiling(currency)
    return FlintError(
        Code.FAILED_PRECONDITION,
        AMOUNT_TOO_LARGE,
        f"The {what} would be {amount}, over the ceiling of {limit} {currency.upper()}",
        metadata={"amount": str(amount), "ceiling": str(limit), "currency": currency},
    )


def overflow(what: str, currency: str) -> FlintError:
    return FlintError(
        Code.FAILED_PRECONDITION,
        "AMOUNT_OVERFLOW",
        f"The {what} {f'in {currency.upper()} ' if currency else ''}is too large to report",
        metadata={"currency": currency},
    )


def int64_total(what: str, total: int, currency: str) -> int:
    """A report's sum (revenue to date, monthly recurring revenue) may pass the
    ceiling — it adds up many amounts — but never int64: refused, not crashed on."""
    if total > INT64_MAX:
        raise overflow(what, currency)
    return total


def display(amount: int, currency: str) -> str:
    """A human form: "1,025.00 USD" (exact: Decimal, not float)."""
    code = currency.upper()
    digits = get_currency_precision(code)
    return f"{Decimal(amount).scaleb(-digits):,.{digits}f} {code}"
