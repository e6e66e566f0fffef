"""The payment processor behind one interface. The built-in test processor knows
the card numbers plugin developers know; a real acquirer would implement the
same protocol."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Card:
    number: str
    exp_month: int
    exp_year: int
    cvc: str

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def brand(self) -> str:
        n = self.number
        if n.startswith("4"):
            return "visa"
        if n[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(n[:4]) <= 2720:
            return "mastercard"
        if n[:2] in {"34", "37"}:
            return "amex"
        if n.startswith(("6011", "65")):
            return "discover"
        return "unknown"


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    # The processor's reference, needed to refund.
    reference: str = ""
    decline_code: str = ""
    message: str = ""


@dataclass(frozen=True)
class RefundResult:
    succeeded: bool
    failure_reason: str = ""


class Processor(Protocol):
    def charge(
        self, *, amount: int, currency: str, card: Card, test_mode: bool
    ) -> ChargeResult: ...

    def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        """Refunds a charge. The same `idempotency_key` (Flint's refund id) asked
        again answers the first outcome and never refunds twice, as acquirers'
        idempotency keys do: a refund whose settling was lost is asked again."""
        ...


DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again.",
}

# Stripe's test cards: numbers that decline, and one whose refunds fail.
_DECLINES = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
    "4000000000000119": "processing_error",
}
REFUND_FAILS_CARD = "4000000000005126"


class TestProcessor:
    """Collects nothing. Any other valid card number succeeds."""

    __test__ = False  # not a pytest class

    def charge(self, *, amount: int, currency: str, card: Card, test_mode: bool) -> ChargeResult:
        decline = _DECLINES.get(card.number)
        if decline:
            return ChargeResult(False, decline_code=decline, message=DECLINE_MESSAGES[decline])
        marker = "rf" if card.number == REFUND_FAILS_CARD else "ch"
        return ChargeResult(True, reference=f"test_{marker}_{secrets.token_hex(8)}")

    def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        # Moves no money and answers from the reference alone: idempotent as it stands.
        if reference.startswith("test_rf_"):
            return RefundResult(False, "The card issuer refused the refund")
        return RefundResult(True)
