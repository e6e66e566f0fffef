"""Fixtures for the end-to-end tests: Flint started with `flint up` on free
ports, and headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import flint_env, free_port
from tests.e2e.readme import FLINT

CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def running_flint_up(
    database_url: str, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """`flint up` on free ports (`env` added to its environment); yields its
    REST (Envoy) port once it is up."""
    http_port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                FLINT,
                "up",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(free_port()),
                "--hosted-port",
                str(free_port()),
                "--admin-port",
                str(free_port()),
            ],
            env=flint_env(database_url) | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Flint is up." not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield http_port
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def flint_up(database_url: str, db: object, tmp_path: Path) -> Iterator[int]:
    with running_flint_up(database_url, tmp_path / "up.log") as http_port:
        yield http_port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Chromium is needed at /usr/bin/chromium (make installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()
