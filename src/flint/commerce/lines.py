"""Line items, totals, and the other inputs every commerce object shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flint.common.errors import Violations
from flint.common.money import check_amount, check_ceiling, check_currency, known_currency

MAX_NAME_LENGTH = 250
MAX_SKU_LENGTH = 100
MAX_QUANTITY = 1_000_000


@dataclass(frozen=True)
class LineInput:
    name: str
    quantity: int
    unit_amount: int
    sku: str = ""


def check_lines(
    violations: Violations,
    fld: str,
    lines: Sequence[LineInput],
    *,
    max_items: int,
    currency: str = "",
) -> None:
    """Each line, and the total they make, under the amount ceiling of
    `currency` (quantity × unit amount is computed here, so it is checked here)."""
    if not lines:
        violations.add(fld, "FIELD_REQUIRED", "needs at least one line item")
        return
    if len(lines) > max_items:
        violations.add(fld, "TOO_MANY_VALUES", f"must have at most {max_items} line items")
    total = 0
    for index, line in enumerate(lines):
        at = f"{fld}[{index}]"
        if not line.name.strip():
            violations.add(f"{at}.name", "FIELD_REQUIRED", "is required")
        elif len(line.name) > MAX_NAME_LENGTH:
            violations.add(
                f"{at}.name", "FIELD_TOO_LONG", f"must be at most {MAX_NAME_LENGTH} characters"
            )
        if not 1 <= line.quantity <= MAX_QUANTITY:
            violations.add(
                f"{at}.quantity", "INVALID_QUANTITY", f"must be between 1 and {MAX_QUANTITY}"
            )
        check_amount(violations, f"{at}.unit_amount", line.unit_amount, currency)
        if len(line.sku) > MAX_SKU_LENGTH:
            violations.add(
                f"{at}.sku", "FIELD_TOO_LONG", f"must be at most {MAX_SKU_LENGTH} characters"
            )
        if line.quantity > 0 and line.unit_amount > 0:
            total += line.quantity * line.unit_amount
    if not violations:
        check_ceiling(violations, fld, total, currency)


def stored_lines(lines: Sequence[LineInput]) -> list[dict[str, Any]]:
    return [
        {
            "name": line.name.strip(),
            "quantity": line.quantity,
            "unit_amount": line.unit_amount,
            "sku": line.sku,
            "amount": line.quantity * line.unit_amount,
        }
        for line in lines
    ]


def total_of(lines: Sequence[dict[str, Any]]) -> int:
    return sum(int(line["amount"]) for line in lines)


def check_money_inputs(
    violations: Violations, fld: str, lines: Sequence[LineInput], currency: str, *, max_items: int
) -> None:
    check_currency(violations, f"{fld}.currency", currency)
    check_lines(
        violations,
        f"{fld}.line_items",
        lines,
        max_items=max_items,
        currency=known_currency(currency),
    )
