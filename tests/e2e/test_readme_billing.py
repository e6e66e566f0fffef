"""The README's app-billing walkthrough, run as written: shell steps in bash,
compared with the expected output; the confirmation pages clicked in headless
Chromium (sign-in, then Approve)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from playwright.sync_api import Browser

from tests.conftest import flint_env
from tests.e2e.readme import Shell, section
from tests.e2e.test_readme_commerce import blocks_with_outputs

# Moves into README.md as the section "App billing"; read from here until then.

CONFIRM_URL = re.compile(r"http://127\.0\.0\.1:\d+/hosted/billing/charges/chg_[a-z0-9]+")


def approve_in_browser(browser: Browser, url: str, email: str, password: str) -> None:
    page = browser.new_context().new_page()
    page.route("https://app.example.com/**", lambda route: route.fulfill(body="thanks"))
    page.goto(url)
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(url)
    assert page.inner_text("#charge-status") == "pending"
    page.click("button[value=approve]")
    page.wait_for_url(
        re.compile(r"https://app\.example\.com/billing\?charge_id=.*decision=approve")
    )
    page.context.close()


def test_billing_walkthrough_works_as_written(
    flint_up: int, database_url: str, tmp_path: Path, browser: Browser
):
    pairs = blocks_with_outputs(section("App billing"))
    assert len(pairs) == 6
    env = flint_env(database_url) | {
        "PATH": os.environ["PATH"],
        "FLINT_PUBLIC_URL": f"http://127.0.0.1:{flint_up}",
    }
    shell = Shell(tmp_path, flint_up, env)
    for block, expected in pairs:
        output = shell.run(block)
        if expected is not None:
            assert output.strip() == expected.strip(), block
        urls = CONFIRM_URL.findall(output)
        if urls:
            seed = json.loads((tmp_path / "seed.json").read_text())
            for url in urls:
                approve_in_browser(browser, url, seed["merchant_email"], seed["merchant_password"])
