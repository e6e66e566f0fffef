"""The sample plugin against a real Flint: `flint up` on free ports, a seeded
merchant and partner with the plugin registered as their app, the plugin as a
child process the tests can stop and restart, installed once through the
consent page in headless Chromium."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser

from flint.devstack import EXAMPLES_DIR, plugin_command, seed_with_plugin
from flint.sdk import FlintClient
from flint.supervisor import wait_for_envoy
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from tests.conftest import Process, flint_env, free_port
from tests.e2e.conftest import browser
from tests.e2e.readme import FLINT
from tests.examples.support import PluginProcess, install_plugin

__all__ = ["browser"]

# The tests read the plugin's own store, as its code does.
sys.path.insert(0, str(EXAMPLES_DIR))
PASSWORD = "correct horse battery"


@dataclass
class PluginStack:
    flint_url: str
    app_id: str
    merchant_key: str  # the merchant's test secret key…
    merchant: FlintClient  # …and the SDK as it
    partner: FlintClient  # the partner key (the app's webhook endpoints)
    plugin: PluginProcess
    support_token: str
    database: str


@pytest.fixture(scope="module")
def stack(
    database_url: str, db: object, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> Iterator[PluginStack]:
    workdir = tmp_path_factory.mktemp("plugin")
    http_port, admin_port, plugin_port = free_port(), free_port(), free_port()
    flint_url = f"http://127.0.0.1:{http_port}"
    log_path = workdir / "flint.log"
    argv = [FLINT, "up", "--http-port", str(http_port), "--admin-port", str(admin_port)]
    argv += ["--grpc-port", str(free_port()), "--hosted-port", str(free_port())]
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            argv,
            # As `flint dev` runs it: the development switch lets the plugin's
            # test-only endpoint be its http://127.0.0.1 receiver.
            env=flint_env(database_url) | {"FLINT_PUBLIC_URL": flint_url, ALLOW_LOOPBACK_ENV: "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    flint = Process(popen, log_path)
    plugin: PluginProcess | None = None
    try:
        assert wait_for_envoy(admin_port, 60, lambda: popen.poll() is None), flint.log()
        plugin_url = f"http://127.0.0.1:{plugin_port}"
        seeded = seed_with_plugin(database_url, plugin_url, PASSWORD)
        support_token = secrets.token_urlsafe(16)
        database = workdir / "thankyou.db"
        plugin_argv, env = plugin_command(
            flint_url=flint_url,
            plugin_port=plugin_port,
            seeded=seeded,
            support_token=support_token,
            database=database,
        )
        plugin = PluginProcess(plugin_argv, env, plugin_url, workdir / "plugin.log")
        plugin.start()
        install_plugin(browser, plugin_url, seeded.merchant.merchant.email, PASSWORD)
        test_key = next(k.secret for k in seeded.merchant.keys if k.record.environment == "test")
        with (
            FlintClient(api_key=test_key, base_url=flint_url) as merchant,
            FlintClient(api_key=seeded.partner.key.secret, base_url=flint_url) as partner,
        ):
            yield PluginStack(
                flint_url,
                seeded.app.id,
                test_key,
                merchant,
                partner,
                plugin,
                support_token,
                str(database),
            )
    finally:
        if plugin is not None:
            plugin.stop()
        flint.stop()
