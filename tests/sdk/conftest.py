"""Fixtures for the SDK tests: Flint started for real by `flint up` (once for
the package: no test restarts it), a freshly seeded merchant and app per test,
and SDK clients."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flint.common.db import Database
from flint.devseed import seed as seed_demo
from flint.sdk import FlintClient
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from tests.conftest import flint_env
from tests.e2e.conftest import browser, running_flint_up
from tests.e2e.readme import FLINT

__all__ = ["browser"]

PASSWORD = "correct horse battery"
REDIRECT_URI = "http://localhost:3000/oauth/callback"


@dataclass(frozen=True)
class Seed:
    """`flint dev seed --json`: a merchant, a partner and the Demo Loyalty app."""

    base_url: str
    database_url: str
    merchant_id: str
    merchant_email: str
    test_key: str
    partner_key: str
    app_id: str
    client_id: str
    client_secret: str

    def env(self) -> dict[str, str]:
        return flint_env(self.database_url) | {"FLINT_PUBLIC_URL": self.base_url}

    def dev_install(self, scope: str) -> dict[str, str]:
        """An app token through `flint dev install` (the OAuth flow without a browser)."""
        out = subprocess.run(
            [
                FLINT,
                "dev",
                "install",
                "--json",
                "--client-id",
                self.client_id,
                "--client-secret",
                self.client_secret,
                "--merchant",
                self.merchant_id,
                "--scope",
                scope,
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return dict(json.loads(out.stdout))


@pytest.fixture(scope="package")
def flint_up(
    database_url: str, db: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    # The development switch: the webhook tests' receivers are on http://127.0.0.1.
    switch = {ALLOW_LOOPBACK_ENV: "1"}
    log = tmp_path_factory.mktemp("up") / "up.log"
    with running_flint_up(database_url, log, switch) as http_port:
        yield http_port


@pytest.fixture
def base_url(flint_up: int) -> str:
    return f"http://127.0.0.1:{flint_up}"


@pytest.fixture
def seed(base_url: str, database_url: str, db: Database) -> Seed:
    """What `flint dev seed --json` prints (made in-process: it is the same code)."""
    with db.unit_of_work() as uow:
        result = seed_demo(uow, password=PASSWORD)
        uow.commit()
    data = result.as_json()
    return Seed(
        base_url=base_url,
        database_url=database_url,
        merchant_id=data["merchant_id"],
        merchant_email=data["merchant_email"],
        test_key=data["test_secret_key"],
        partner_key=data["partner_key"],
        app_id=data["app_id"],
        client_id=data["client_id"],
        client_secret=data["client_secret"],
    )


@pytest.fixture
def merchant(seed: Seed) -> Iterator[FlintClient]:
    """The SDK as the seeded merchant's test secret key."""
    with FlintClient(api_key=seed.test_key, base_url=seed.base_url, timeout=20) as client:
        yield client


def order_body(total: int = 1250, email: str = "ann@example.com") -> dict[str, object]:
    return {
        "currency": "usd",
        "customer_email": email,
        "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": total}],
    }
