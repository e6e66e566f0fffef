"""The README's "Install an app (OAuth)" walkthrough, run as written: the shell
steps in bash, the browser step (sign in, approve) in headless Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Browser, Route

from tests.conftest import flint_env
from tests.e2e.readme import Shell, code_blocks, section

CHROMIUM = Path("/usr/bin/chromium")
CODE_PLACEHOLDER = "fac_paste_the_code_here"


def approve_in_browser(browser: Browser, url: str, email: str, password: str) -> str:
    """Signs in and approves; returns the URL the browser was sent back to."""
    page = browser.new_context().new_page()
    callbacks: list[str] = []

    def app_callback(route: Route) -> None:
        callbacks.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="nothing listens here")

    page.route("http://localhost:3000/**", app_callback)
    page.goto(url)
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/oauth/authorize?**")
    consent = page.inner_text("main")
    assert "Demo Loyalty" in consent
    assert "TEST" in consent
    assert "New install" in consent
    page.click("button[value=approve]")
    page.wait_for_url("http://localhost:3000/**")
    page.context.close()
    (callback,) = callbacks
    return callback


def test_install_walkthrough_works_as_written(
    flint_up: int,
    database_url: str,
    tmp_path: Path,
    browser: Browser,
):
    blocks = code_blocks(section("Install an app (OAuth)"))
    assert len(blocks) == 7
    shell = Shell(tmp_path, flint_up, flint_env(database_url) | {"PATH": os.environ["PATH"]})

    signed_in_as = shell.run(blocks[0])
    email = signed_in_as.strip().removeprefix("sign in as ")
    authorize_url = shell.run(blocks[1]).strip().splitlines()[-1]
    assert authorize_url.startswith(f"http://127.0.0.1:{flint_up}/oauth/authorize?")

    callback = approve_in_browser(browser, authorize_url, email, "correct horse battery")
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == ["xyz123"]
    code = query["code"][0]
    assert code.startswith("fac_")

    assert CODE_PLACEHOLDER in blocks[2]
    shell.run(blocks[2].replace(CODE_PLACEHOLDER, code))
    tokens = json.loads(shell.run(blocks[3]))
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "orders:read events:read"
    assert tokens["environment"] == "test"
    assert re.fullmatch(r"frt_\w+", tokens["refresh_token"])

    install = json.loads(shell.run(blocks[4]))
    assert install["id"] == tokens["install_id"]
    assert install["status"] == "INSTALL_STATUS_ACTIVE"

    shell.run(blocks[5])
    refreshed = json.loads((tmp_path / "tokens.json").read_text())
    assert refreshed["refresh_token"] != tokens["refresh_token"]

    uninstall_output = shell.run(blocks[6]).strip().splitlines()
    assert json.loads(uninstall_output[0])["status"] == "INSTALL_STATUS_UNINSTALLED"
    assert uninstall_output[-1] == "401"
