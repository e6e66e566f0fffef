"""A gRPC server for webhook tests that accepts loopback receivers
(FLINT_WEBHOOKS_ALLOW_LOOPBACK=1, as `flint up` does), and a world with a
partner's app installed on a merchant."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import select, update

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from flint.webhooks.models import WebhookDeliveryRecord
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from flint.webhooks.v1 import webhooks_service_pb2_grpc as pb_grpc
from tests.commerce.support import Commerce
from tests.conftest import MerchantCreds, PartnerCreds, bearer, start_grpc_server, wait_until
from tests.installs.oauth_support import OAuthWorld, make_world

TEST = accounts_pb.ENVIRONMENT_TEST
LIVE = accounts_pb.ENVIRONMENT_LIVE


@pytest.fixture(autouse=True)
def no_pending_deliveries_left(db: Database) -> Iterator[None]:
    """Deliveries a test leaves pending (to receivers that are gone) would be
    claimed by the next test's worker: they are skipped after each test."""
    yield
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(WebhookDeliveryRecord)
            .where(WebhookDeliveryRecord.status == "pending")
            .values(status="skipped", next_attempt_at=None)
        )
        uow.commit()


@pytest.fixture(scope="session")
def hooks_server(
    db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    before = os.environ.get(ALLOW_LOOPBACK_ENV)
    os.environ[ALLOW_LOOPBACK_ENV] = "1"
    try:
        process, port = start_grpc_server(database_url, tmp_path_factory.mktemp("hooks-logs"))
    finally:
        if before is None:
            del os.environ[ALLOW_LOOPBACK_ENV]
        else:
            os.environ[ALLOW_LOOPBACK_ENV] = before
    yield port
    process.stop()


@pytest.fixture(scope="session")
def hooks_channel(hooks_server: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{hooks_server}") as chan:
        yield chan


@dataclass
class Hooks:
    """A partner's app installed on a merchant (test environment, given
    scopes), with stubs for endpoints and commerce."""

    world: OAuthWorld
    app_token: str

    @property
    def stub(self) -> pb_grpc.WebhooksServiceStub:
        return pb_grpc.WebhooksServiceStub(self.world.channel)

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return bearer(self.world.partner.key)

    @property
    def app_id(self) -> str:
        return self.world.app.id

    @property
    def merchant(self) -> Commerce:
        return Commerce(self.world.channel, self.world.merchant.test_key, self.world.internal)

    def create_endpoint(
        self,
        url: str,
        *,
        events: tuple[str, ...] = ("order.*",),
        environments: tuple[int, ...] = (TEST,),
        app_id: str = "",
        **fields: object,
    ) -> pb.WebhookEndpoint:
        return self.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                app_id=app_id or self.app_id,
                webhook_endpoint=pb.WebhookEndpoint(
                    url=url,
                    enabled_events=list(events),
                    environments=list(environments),
                    **fields,  # type: ignore[arg-type]
                ),
            ),
            metadata=self.auth,
        )


@pytest.fixture
def another_merchant(
    accounts_stub: accounts_grpc.AccountsServiceStub, admin_key: str
) -> MerchantCreds:
    """A second merchant, which has installed nothing."""
    email = f"other-{secrets.token_hex(4)}@example.com"
    merchant = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            merchant=accounts_pb.Merchant(name="Other Shop", email=email),
            password="correct horse battery",
        ),
        metadata=bearer(admin_key),
    )
    keys = {key.environment: key.secret for key in merchant.secret_keys}
    return MerchantCreds(merchant.id, keys[TEST], keys[LIVE], email)


@pytest.fixture
def hooks(
    hooks_channel: grpc.Channel,
    db: Database,
    new_partner: PartnerCreds,
    new_merchant: MerchantCreds,
) -> Hooks:
    world = make_world(hooks_channel, db, new_partner, new_merchant)
    token = world.install(scope="orders:read events:read").access_token
    wait_until_sequenced(db)
    return Hooks(world, token)


def wait_until_sequenced(db: Database) -> None:
    """Every committed event has its cursor (and so has been fanned out)."""

    def done() -> bool:
        with db.read() as session:
            return (
                session.scalar(select(EventRecord.id).where(EventRecord.cursor.is_(None))) is None
            )

    wait_until(done)
