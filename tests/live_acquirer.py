"""A live-capable acquirer double, for tests that pay in live mode only.

No real acquirer can run here. This one behaves exactly like the test processor
and vault (the same test cards), but says it settles live money, so tests can
exercise the live paths behind FLINT_ACQUIRER — the seam a real acquirer plugs
into. It must never be named outside tests."""

from __future__ import annotations

from flint.billing.vault import TestVault
from flint.commerce.processor import TestProcessor
from flint.server.acquirer import Acquirer

SPEC = "tests.live_acquirer:live_test_acquirer"


class LiveTestProcessor(TestProcessor):
    settles_live = True


class LiveTestVault(TestVault):
    settles_live = True


def live_test_acquirer() -> Acquirer:
    processor = LiveTestProcessor()
    return Acquirer(processor, LiveTestVault(processor))
