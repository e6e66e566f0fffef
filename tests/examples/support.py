"""Driving the sample plugin (examples/thankyou_plugin) the way a merchant and
a buyer do: install it through Flint's consent page and pay a checkout, in
headless Chromium."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page

from flint.supervisor import wait_for_http

APP_NAME = "Thank You Notes"


def install_plugin(browser: Browser, plugin_url: str, email: str, password: str) -> None:
    """Clicks Install on the plugin, signs in and approves on Flint's consent page."""
    page = browser.new_context().new_page()
    page.goto(plugin_url)
    page.get_by_role("link", name="Install").click()
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/oauth/authorize?**")
    consent = page.inner_text("main")
    assert APP_NAME in consent
    assert "TEST" in consent
    page.click("button[value=approve]")
    page.wait_for_url(f"{plugin_url}/")
    assert "Installed on mer_" in page.inner_text("body")
    page.context.close()


def pay_with_test_card(page: Page) -> None:
    page.wait_for_url("**/pay/**")
    page.fill("#card-number", "4242 4242 4242 4242")
    page.fill("#card-expiry", "12/34")
    page.fill("#card-cvc", "123")
    page.click("button.pay-button")


def checkout_from_plugin(browser: Browser, plugin_url: str) -> None:
    """Clicks "Create a test checkout" on the plugin and pays it."""
    page = browser.new_context().new_page()
    page.goto(plugin_url)
    page.get_by_role("button", name="Create a test checkout").click()
    pay_with_test_card(page)
    page.wait_for_url(f"{plugin_url}/?paid=ord_*")
    page.context.close()


@dataclass
class PluginProcess:
    """The plugin as a child process that a test can stop and start again
    (same port, same store)."""

    argv: list[str]
    env: dict[str, str]
    url: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_for_http(f"{self.url}/healthz", 30, lambda: self.popen.poll() is None):  # type: ignore[union-attr]
            raise AssertionError(f"the plugin did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(20)
