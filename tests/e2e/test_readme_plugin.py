"""The README's "Build your first plugin", run as written: `make dev` (as
`flint dev` on free ports), the install and the checkout in headless Chromium,
and the shell steps in bash, each compared with the output the README shows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from playwright.sync_api import Browser

from flint.supervisor import wait_for_http
from tests.conftest import flint_env, free_port, wait_until
from tests.e2e.readme import FLINT, Shell, section
from tests.e2e.test_readme_commerce import blocks_with_outputs
from tests.examples.support import checkout_from_plugin, install_plugin

SIGN_IN = re.compile(r"email\s+(\S+)\n\s+password\s+(\S+)")


def output_matches(shell: Shell, block: str, expected: str, timeout: float) -> None:
    """Runs `block` until it prints `expected`: the plugin's note follows the
    payment by a webhook delivery, as the README says."""
    deadline = time.monotonic() + timeout
    while (output := shell.run(block).strip()) != expected.strip():
        assert time.monotonic() < deadline, f"{block}\n{output}"
        time.sleep(0.5)


def test_build_your_first_plugin_works_as_written(
    database_url: str, db: object, tmp_path: Path, browser: Browser
):
    pairs = blocks_with_outputs(section("Build your first plugin"))
    assert pairs[0][0].strip() == "make dev"
    assert len(pairs) == 3
    http_port, admin_port, plugin_port = free_port(), free_port(), free_port()
    plugin_url = f"http://127.0.0.1:{plugin_port}"
    make_dev = [FLINT, "dev", "--http-port", str(http_port), "--plugin-port", str(plugin_port)]
    make_dev += ["--admin-port", str(admin_port)]
    make_dev += ["--grpc-port", str(free_port()), "--hosted-port", str(free_port())]
    printed = tmp_path / "make-dev.out"
    env = flint_env(database_url) | {"PATH": os.environ["PATH"]}
    with printed.open("w") as out:
        dev = subprocess.Popen(
            make_dev, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    try:
        wait_until(lambda: "Press Ctrl-C to stop." in printed.read_text() or dev.poll(), 120)
        output = printed.read_text()
        assert dev.poll() is None, output
        assert f"Open {plugin_url} and click Install." in output
        email, password = SIGN_IN.search(output).groups()  # type: ignore[union-attr]

        install_plugin(browser, plugin_url, email, password)
        checkout_from_plugin(browser, plugin_url)

        shell = Shell(tmp_path, http_port, env)
        (timeline_block, timeline), (refund_block, refunded) = pairs[1:]
        assert timeline is not None
        assert refunded is not None
        output_matches(shell, timeline_block, timeline, timeout=30)
        assert shell.run(refund_block).strip() == refunded.strip()

        # Ctrl-C stops Flint and the plugin with it.
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0
        assert not wait_for_http(f"{plugin_url}/healthz", 1)
        assert not wait_for_http(f"http://127.0.0.1:{admin_port}/ready", 1)
    finally:
        if dev.poll() is None:
            dev.terminate()
            dev.wait(60)
