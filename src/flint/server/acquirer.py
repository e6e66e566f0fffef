"""Which acquirer moves the money: where a real one plugs in.

`FLINT_ACQUIRER=package.module:factory` names a callable that takes no
arguments and returns an `Acquirer`: a `Processor` (buyers' cards: checkout
sessions, invoices, refunds) and a `CardVault` (the merchant's card on file, for
live app charges), both talking to the acquirer and both with
`settles_live = True`. Flint ships no real acquirer. Unset, the built-in test
processor and vault serve test mode, and live payments are refused with
LIVE_PAYMENTS_NOT_CONFIGURED (test cards are public: taking them as real money
would let anyone "pay" a live order)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from flint.billing.vault import CardVault, TestVault
from flint.commerce.processor import Processor, TestProcessor

ACQUIRER_ENV = "FLINT_ACQUIRER"


@dataclass(frozen=True)
class Acquirer:
    processor: Processor
    vault: CardVault


def builtin_acquirer(processor: Processor | None = None) -> Acquirer:
    """The built-in test processor (or `processor`) with the test vault."""
    processor = processor or TestProcessor()
    return Acquirer(processor, TestVault(processor))


class AcquirerConfigError(RuntimeError):
    pass


def load_acquirer(spec: str) -> Acquirer:
    """The acquirer `spec` (`module:factory`) names; the test one for "".

    A misconfigured acquirer stops the server at start-up rather than leaving
    live payments to fail (or worse, to settle through the test processor)."""
    if not spec:
        return builtin_acquirer()
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise AcquirerConfigError(f"{ACQUIRER_ENV} must be 'package.module:factory', not {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise AcquirerConfigError(f"{ACQUIRER_ENV}={spec!r} cannot be loaded: {error}") from error
    acquirer = factory()
    if not isinstance(acquirer, Acquirer):
        raise AcquirerConfigError(f"{ACQUIRER_ENV}={spec!r} did not return an Acquirer")
    if not (acquirer.processor.settles_live and acquirer.vault.settles_live):
        raise AcquirerConfigError(
            f"{ACQUIRER_ENV}={spec!r}: an acquirer's processor and vault must settle live money"
        )
    return acquirer


def acquirer_from_env() -> Acquirer:
    return load_acquirer(os.environ.get(ACQUIRER_ENV, "").strip())
