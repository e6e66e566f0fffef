"""The merchant's card on file. A vault keeps the card and hands Flint a token;
Flint stores the token, brand, last four and expiry, never the number or CVC.

`TestVault` stands in front of the test processor: its tokens name which of the
published test cards was saved (they are public numbers, not secrets), so a
saved `4000 0000 0000 0002` still declines. A real acquirer's vault would
implement the same two methods against its own API, with `settles_live = True`:
live app charges are approved and collected only through such a vault."""

from __future__ import annotations

from typing import Protocol

from flint.commerce.processor import _DECLINES, Card, ChargeResult, Processor

_SUCCEEDS = "4242424242424242"
_TOKEN_PREFIX = "tok_test_"  # noqa: S105 - a prefix, not a secret


class CardVault(Protocol):
    # Whether charges through this vault move real money (see Processor).
    settles_live: bool

    def save(self, card: Card) -> str: ...

    def charge(self, *, token: str, amount: int, currency: str) -> ChargeResult: ...


class TestVault:
    __test__ = False  # not a pytest class
    settles_live = False

    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    def save(self, card: Card) -> str:
        outcome = _DECLINES.get(card.number, "ok")
        return f"{_TOKEN_PREFIX}{outcome}"

    def charge(self, *, token: str, amount: int, currency: str) -> ChargeResult:
        outcome = token.removeprefix(_TOKEN_PREFIX)
        number = next((n for n, code in _DECLINES.items() if code == outcome), _SUCCEEDS)
        card = Card(number, 12, 2099, "123")
        return self._processor.charge(amount=amount, currency=currency, card=card, test_mode=False)
