"""The payment processor behind one interface. The built-in test processor knows
the card numbers plugin developers know and moves no money, so it settles test
mode only: live checkout, invoice and app-charge payments are refused with
LIVE_PAYMENTS_NOT_CONFIGURED until a real acquirer is plugged in.

Plugging an acquirer in: implement `Processor` (and billing's `CardVault` for the
merchant's card on file) against the acquirer's API with `settles_live = True`,
and name a factory returning both in `FLINT_ACQUIRER` (see server/acquirer.py)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from flint.common.errors import Code, FlintError


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
    # True only for a processor that moves real money: only such a processor
    # may be asked to charge a live-mode payment.
    settles_live: bool

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


def live_payments_not_configured() -> FlintError:
    return FlintError(
        Code.FAILED_PRECONDITION,
        "LIVE_PAYMENTS_NOT_CONFIGURED",
        "Live payments are not available: no acquirer is configured, and the built-in"
        " test processor settles test mode only",
    )


def refuse_unless_settles(settles_live: bool, environment: str) -> None:
    """Refuses moving `environment`'s money through a processor (or vault) that
    cannot settle it: test money anywhere, live money only through an acquirer."""
    if environment == "live" and not settles_live:
        raise live_payments_not_configured()


class TestProcessor:
    """Collects nothing. Any other valid card number succeeds."""

    __test__ = False  # not a pytest class
    # Test cards are public numbers: accepting them as real money would let
    # anyone "pay" a live order.
    settles_live = False

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
