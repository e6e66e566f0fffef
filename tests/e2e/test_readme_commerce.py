"""The README's commerce walkthrough, run as written: shell steps in bash, each
compared with the expected output the README shows; the hosted pages (checkout,
invoice, payment link) paid in headless Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Browser

from tests.conftest import flint_env
from tests.e2e.readme import Shell, section

PAY_URL = re.compile(r"http://127\.0\.0\.1:\d+/(pay|i|l)/[a-z0-9_]+")


def blocks_with_outputs(text: str) -> list[tuple[str, str | None]]:
    """Each sh block, with the plain block right after it (its expected output)."""
    found = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL)
    pairs: list[tuple[str, str | None]] = []
    for language, body in found:
        if language == "sh":
            pairs.append((body, None))
        elif language == "" and pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], body)
    return pairs


def pay_in_browser(browser: Browser, url: str, lands_on: str) -> None:
    """Pays the hosted page at `url` with the test card; waits for `lands_on`."""
    page = browser.new_context().new_page()
    page.route("https://shop.example.com/**", lambda route: route.fulfill(body="thanks"))
    page.goto(url)
    if "/l/" in url:
        # A payment link's landing page only reads; the buyer presses on to pay.
        page.click("button.pay-button")
        page.wait_for_url("**/pay/cs_*")
    page.fill("#card-number", "4242 4242 4242 4242")
    page.fill("#card-expiry", "12/34")
    page.fill("#card-cvc", "123")
    page.click("button.pay-button")
    page.wait_for_url(lands_on)
    page.context.close()


def test_commerce_walkthrough_works_as_written(
    flint_up: int,
    database_url: str,
    tmp_path: Path,
    browser: Browser,
):
    pairs = blocks_with_outputs(
        section("Commerce: orders, checkout, refunds, invoices, payment links")
    )
    assert len(pairs) == 9
    env = flint_env(database_url) | {
        "PATH": os.environ["PATH"],
        # `flint dev install` signs tokens for the address the README's Flint listens on.
        "FLINT_PUBLIC_URL": f"http://127.0.0.1:{flint_up}",
    }
    shell = Shell(tmp_path, flint_up, env)
    for block, expected in pairs:
        output = shell.run(block)
        if expected is not None:
            assert output.strip() == expected.strip(), block
        for match in PAY_URL.finditer(output):
            url, kind = match.group(0), match.group(1)
            if kind == "i":
                pay_in_browser(browser, url, lands_on=url)  # back on the invoice, now paid
            else:
                # A payment link opens a fresh checkout on each of two visits.
                for _visit in range(1 if kind == "pay" else 2):
                    pay_in_browser(browser, url, lands_on="https://shop.example.com/thanks")
