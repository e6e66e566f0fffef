"""Webhook endpoints through the API: what is accepted, what is refused, who
sees what, secrets shown once and never stored in the clear."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import String, Text, inspect, select

from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.common.db import Database
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from flint.webhooks.v1 import webhooks_service_pb2_grpc as pb_grpc
from tests.conftest import PartnerCreds, bearer
from tests.errors import grpc_error
from tests.webhooks.conftest import LIVE, TEST, Hooks

GOOD_URL = "https://hooks.example.com/flint"


class Strict:
    """The shared server, which runs without the loopback development setting."""

    def __init__(self, channel: grpc.Channel, partner: PartnerCreds) -> None:
        self.stub = pb_grpc.WebhooksServiceStub(channel)
        self.auth = bearer(partner.key)
        self.app = apps_grpc.AppsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(
                app=apps_pb.App(name="Hooks", redirect_uris=["https://example.com/cb"])
            ),
            metadata=self.auth,
        )

    def create(
        self, url: str, environments: tuple[int, ...] = (LIVE,), events: tuple[str, ...] = ("*",)
    ) -> pb.WebhookEndpoint:
        return self.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                app_id=self.app.id,
                webhook_endpoint=pb.WebhookEndpoint(
                    url=url, enabled_events=list(events), environments=list(environments)
                ),
            ),
            metadata=self.auth,
        )

    def refused_url(self, url: str, environments: tuple[int, ...] = (LIVE,)) -> str:
        with pytest.raises(grpc.RpcError) as caught:
            self.create(url, environments)
        details = grpc_error(caught.value)
        assert details.code == "INVALID_ARGUMENT"
        assert details.fields == ["webhook_endpoint.url"]
        return details.reason


@pytest.fixture
def strict(channel: grpc.Channel, new_partner: PartnerCreds) -> Strict:
    return Strict(channel, new_partner)


def test_an_app_has_at_most_16_endpoints_even_when_created_at_once(strict: Strict):
    start = threading.Barrier(20)

    def create(n: int) -> str:
        start.wait()
        try:
            strict.create(f"{GOOD_URL}/{n}")
            return "CREATED"
        except grpc.RpcError as error:
            return grpc_error(error).reason

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(create, range(20)))
    assert sorted(outcomes) == ["CREATED"] * 16 + ["TOO_MANY_WEBHOOK_ENDPOINTS"] * 4
    listed = strict.stub.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(app_id=strict.app.id, page_size=50), metadata=strict.auth
    )
    assert len(listed.webhook_endpoints) == 16


# --- refused URLs, each its own test ----------------------------------------------


def test_url_that_is_not_a_url_is_refused(strict: Strict):
    assert strict.refused_url("not a url") == "INVALID_URL"


def test_relative_url_is_refused(strict: Strict):
    assert strict.refused_url("/hooks") == "INVALID_URL"


def test_ftp_url_is_refused(strict: Strict):
    assert strict.refused_url("ftp://hooks.example.com/x") == "INVALID_URL"


def test_url_with_credentials_is_refused(strict: Strict):
    assert strict.refused_url("https://user:pw@hooks.example.com/x") == "INVALID_URL"


def test_url_with_fragment_is_refused(strict: Strict):
    assert strict.refused_url("https://hooks.example.com/x#frag") == "INVALID_URL"


def test_missing_url_is_refused(strict: Strict):
    assert strict.refused_url("") == "FIELD_REQUIRED"


def test_overlong_url_is_refused(strict: Strict):
    assert strict.refused_url("https://hooks.example.com/" + "a" * 2100) == "FIELD_TOO_LONG"


def test_plain_http_live_endpoint_is_refused(strict: Strict):
    assert strict.refused_url("http://hooks.example.com/x") == "INSECURE_URL"


def test_plain_http_is_accepted_for_a_test_only_endpoint(strict: Strict):
    assert strict.create("http://hooks.example.com/x", (TEST,)).url == "http://hooks.example.com/x"


def test_live_endpoint_on_a_private_10_address_is_refused(strict: Strict):
    assert strict.refused_url("https://10.0.0.8/hooks") == "ADDRESS_NOT_ALLOWED"


def test_live_endpoint_on_a_private_192_168_address_is_refused(strict: Strict):
    assert strict.refused_url("https://192.168.0.10/hooks") == "ADDRESS_NOT_ALLOWED"


def test_live_endpoint_on_127_0_0_1_is_refused_when_loopback_is_not_allowed(strict: Strict):
    assert strict.refused_url("https://127.0.0.1:8443/hooks") == "ADDRESS_NOT_ALLOWED"


def test_localhost_is_refused_when_loopback_is_not_allowed(strict: Strict):
    assert strict.refused_url("http://localhost:3000/hooks", (TEST,)) == "ADDRESS_NOT_ALLOWED"


def test_live_endpoint_on_the_metadata_address_is_refused(strict: Strict):
    assert strict.refused_url("https://169.254.169.254/latest/meta-data") == "ADDRESS_NOT_ALLOWED"


def test_live_endpoint_on_ipv6_loopback_is_refused(strict: Strict):
    assert strict.refused_url("https://[::1]/hooks") == "ADDRESS_NOT_ALLOWED"


def test_private_address_is_refused_for_test_endpoints_too(strict: Strict):
    assert strict.refused_url("http://10.1.2.3/hooks", (TEST,)) == "ADDRESS_NOT_ALLOWED"


def test_loopback_http_is_accepted_with_the_development_setting(hooks: Hooks):
    assert hooks.create_endpoint("http://127.0.0.1:9/hooks").url == "http://127.0.0.1:9/hooks"


# --- other fields -----------------------------------------------------------------


def test_unknown_event_pattern_and_missing_environments_are_named(strict: Strict):
    with pytest.raises(grpc.RpcError) as caught:
        strict.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                app_id=strict.app.id,
                webhook_endpoint=pb.WebhookEndpoint(
                    url=GOOD_URL, enabled_events=["order.paid", "Order Paid!"]
                ),
            ),
            metadata=strict.auth,
        )
    details = grpc_error(caught.value)
    assert details.code == "INVALID_ARGUMENT"
    assert set(details.fields) == {
        "webhook_endpoint.environments",
        "webhook_endpoint.enabled_events[1]",
    }


def test_an_event_type_not_in_the_catalog_is_refused(strict: Strict):
    # A typo would otherwise be saved and silently never match an event.
    with pytest.raises(grpc.RpcError) as caught:
        strict.create(GOOD_URL, events=("order.paid", "order.payed"))
    details = grpc_error(caught.value)
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "INVALID_EVENT_TYPE")
    assert details.fields == ["webhook_endpoint.enabled_events[1]"]


def test_a_family_of_no_catalog_type_is_refused(strict: Strict):
    with pytest.raises(grpc.RpcError) as caught:
        strict.create(GOOD_URL, events=("orders.*",))
    details = grpc_error(caught.value)
    assert (details.reason, details.fields) == (
        "INVALID_EVENT_TYPE",
        ["webhook_endpoint.enabled_events[0]"],
    )


def test_catalog_types_and_families_are_accepted(strict: Strict):
    events = ("order.paid", "refund.*", "checkout.*", "checkout.session.*", "install.uninstalled")
    assert list(strict.create(GOOD_URL, events=events).enabled_events) == list(events)


def test_no_enabled_events_is_refused(strict: Strict):
    with pytest.raises(grpc.RpcError) as caught:
        strict.create(GOOD_URL, events=())
    assert grpc_error(caught.value).fields == ["webhook_endpoint.enabled_events"]


def test_create_get_list_update_delete(strict: Strict):
    created = strict.create(GOOD_URL, (TEST, LIVE), ("order.paid", "refund.*"))
    assert created.id.startswith("we_")
    assert created.app_id == strict.app.id
    assert created.status == pb.WEBHOOK_ENDPOINT_STATUS_ENABLED
    assert list(created.environments) == [TEST, LIVE]
    assert created.secret.startswith("whsec_")
    got = strict.stub.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=created.id), metadata=strict.auth
    )
    assert got.secret == ""  # shown once
    assert list(got.enabled_events) == ["order.paid", "refund.*"]
    listed = strict.stub.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(app_id=strict.app.id), metadata=strict.auth
    )
    assert [e.id for e in listed.webhook_endpoints] == [created.id]
    updated = strict.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(id=created.id, description="ops", url="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=strict.auth,
    )
    assert (updated.description, updated.url) == ("ops", GOOD_URL)
    strict.stub.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(id=created.id), metadata=strict.auth
    )
    with pytest.raises(grpc.RpcError) as caught:
        strict.stub.GetWebhookEndpoint(
            pb.GetWebhookEndpointRequest(id=created.id), metadata=strict.auth
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_unknown_update_mask_path_is_refused(strict: Strict):
    created = strict.create(GOOD_URL)
    with pytest.raises(grpc.RpcError) as caught:
        strict.stub.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                webhook_endpoint=pb.WebhookEndpoint(id=created.id, description="ops"),
                update_mask=field_mask_pb2.FieldMask(paths=["description", "secret"]),
            ),
            metadata=strict.auth,
        )
    details = grpc_error(caught.value)
    assert (details.reason, details.fields) == ("UNKNOWN_FIELD_MASK_PATH", ["update_mask.paths[1]"])
    got = strict.stub.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=created.id), metadata=strict.auth
    )
    assert got.description == ""


def test_adding_live_to_an_http_endpoint_is_refused(strict: Strict):
    created = strict.create("http://hooks.example.com/x", (TEST,))
    with pytest.raises(grpc.RpcError) as caught:
        strict.stub.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                webhook_endpoint=pb.WebhookEndpoint(id=created.id, environments=[TEST, LIVE]),
                update_mask=field_mask_pb2.FieldMask(paths=["environments"]),
            ),
            metadata=strict.auth,
        )
    details = grpc_error(caught.value)
    assert (details.reason, details.fields) == ("INSECURE_URL", ["webhook_endpoint.url"])


def test_another_partners_endpoint_is_not_found(strict: Strict, other_partner: PartnerCreds):
    created = strict.create(GOOD_URL)
    rival = bearer(other_partner.key)
    calls = [
        lambda: strict.stub.GetWebhookEndpoint(
            pb.GetWebhookEndpointRequest(id=created.id), metadata=rival
        ),
        lambda: strict.stub.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                webhook_endpoint=pb.WebhookEndpoint(id=created.id, description="mine")
            ),
            metadata=rival,
        ),
        lambda: strict.stub.DeleteWebhookEndpoint(
            pb.DeleteWebhookEndpointRequest(id=created.id), metadata=rival
        ),
        lambda: strict.stub.RotateWebhookEndpointSecret(
            pb.RotateWebhookEndpointSecretRequest(id=created.id), metadata=rival
        ),
        lambda: strict.stub.TestWebhookEndpoint(
            pb.TestWebhookEndpointRequest(id=created.id), metadata=rival
        ),
        lambda: strict.stub.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(endpoint_id=created.id), metadata=rival
        ),
        lambda: strict.stub.ListWebhookDeliveryAttempts(
            pb.ListWebhookDeliveryAttemptsRequest(endpoint_id=created.id), metadata=rival
        ),
        lambda: strict.stub.ReplayEvent(
            pb.ReplayEventRequest(id=created.id, event_id="evt_x"), metadata=rival
        ),
        lambda: strict.stub.ListWebhookEndpoints(
            pb.ListWebhookEndpointsRequest(app_id=strict.app.id), metadata=rival
        ),
        lambda: strict.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                app_id=strict.app.id,
                webhook_endpoint=pb.WebhookEndpoint(
                    url=GOOD_URL, enabled_events=["*"], environments=[LIVE]
                ),
            ),
            metadata=rival,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value
    still = strict.stub.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=created.id), metadata=strict.auth
    )
    assert still.description == ""


def test_merchant_keys_cannot_manage_endpoints(strict: Strict, new_merchant):
    with pytest.raises(grpc.RpcError) as caught:
        strict.stub.ListWebhookEndpoints(
            pb.ListWebhookEndpointsRequest(app_id=strict.app.id),
            metadata=bearer(new_merchant.test_key),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_24_hours(strict: Strict):
    created = strict.create(GOOD_URL)
    rotated = strict.stub.RotateWebhookEndpointSecret(
        pb.RotateWebhookEndpointSecretRequest(id=created.id), metadata=strict.auth
    )
    assert rotated.secret.startswith("whsec_")
    assert rotated.secret != created.secret
    overlap = rotated.previous_secret_expire_time.ToDatetime() - rotated.update_time.ToDatetime()
    assert overlap.total_seconds() == 24 * 3600


def test_list_shows_the_endpoint_as_get_does(strict: Strict):
    # The rotation overlap and what a disabled endpoint missed are part of the
    # resource: a List must not drop them.
    created = strict.create(GOOD_URL)
    strict.stub.RotateWebhookEndpointSecret(
        pb.RotateWebhookEndpointSecretRequest(id=created.id), metadata=strict.auth
    )
    strict.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(
                id=created.id, status=pb.WEBHOOK_ENDPOINT_STATUS_DISABLED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=strict.auth,
    )
    got = strict.stub.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=created.id), metadata=strict.auth
    )
    assert got.HasField("previous_secret_expire_time")
    assert got.HasField("missed")
    [listed] = strict.stub.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(app_id=strict.app.id), metadata=strict.auth
    ).webhook_endpoints
    assert listed.previous_secret_expire_time == got.previous_secret_expire_time
    assert listed.missed.count == got.missed.count == 0
    assert listed.HasField("missed")


def test_no_raw_secret_in_any_table(strict: Strict, db: Database):
    created = strict.create(GOOD_URL)
    rotated = strict.stub.RotateWebhookEndpointSecret(
        pb.RotateWebhookEndpointSecretRequest(id=created.id), metadata=strict.auth
    )
    needles = []
    for secret in (created.secret, rotated.secret):
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        needles += [secret, secret.removeprefix("whsec_"), raw.hex()]
        needles.append(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    inspector = inspect(db.engine)
    with db.engine.connect() as connection:
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                if not isinstance(column["type"], String | Text) and "JSON" not in str(
                    column["type"]
                ):
                    continue
                for (value,) in connection.execute(select(_column(table, column["name"]))).all():
                    text = str(value)
                    for needle in needles:
                        assert needle not in text, f"{table}.{column['name']} holds a secret"


def _column(table: str, name: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import column
    from sqlalchemy import table as table_

    return table_(table, column(name)).c[name]


# --- REST through Envoy -------------------------------------------------------------


def test_rest_create_and_refusal_through_envoy(strict: Strict, rest):  # type: ignore[no-untyped-def]
    from tests.errors import rest_error

    auth = {"authorization": strict.auth[0][1]}
    created = rest.post(
        f"/v1/apps/{strict.app.id}/webhook_endpoints",
        headers=auth,
        json={
            "url": GOOD_URL,
            "enabled_events": ["order.paid"],
            "environments": ["ENVIRONMENT_LIVE"],
        },
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["status"] == "WEBHOOK_ENDPOINT_STATUS_ENABLED"
    refused = rest.post(
        f"/v1/apps/{strict.app.id}/webhook_endpoints",
        headers=auth,
        json={
            "url": "https://169.254.169.254/",
            "enabled_events": ["*"],
            "environments": ["ENVIRONMENT_LIVE"],
        },
    )
    assert refused.status_code == 400
    details = rest_error(refused)
    assert (details.reason, details.fields) == ("ADDRESS_NOT_ALLOWED", ["webhook_endpoint.url"])
    listed = rest.get(f"/v1/webhook_endpoints/{body['id']}/deliveries", headers=auth)
    assert listed.status_code == 200, listed.text
    assert listed.json().get("deliveries", []) == []


# --- the issue-13 targets: gateways to IPv4, and the development switch -------------


@pytest.mark.parametrize(
    "url",
    [
        "https://[64:ff9b::7f00:1]/hooks",  # NAT64 of 127.0.0.1
        "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of the metadata service
        "https://[2002:7f00:1::1]/hooks",  # 6to4 of 127.0.0.1
        "https://[::ffff:169.254.169.254]/latest/meta-data",  # IPv4-mapped
        "https://100.64.0.1/hooks",  # shared (CGNAT)
        "https://[fe80::1]/hooks",
    ],
)
def test_nat64_6to4_mapped_and_shared_addresses_are_refused(strict: Strict, url: str):
    assert strict.refused_url(url) == "ADDRESS_NOT_ALLOWED"
    assert strict.refused_url(url, (TEST,)) == "ADDRESS_NOT_ALLOWED"


def test_the_development_switch_still_refuses_envoys_admin_port(
    hooks_channel: grpc.Channel, new_partner: PartnerCreds
):
    # The hooks server runs with FLINT_WEBHOOKS_ALLOW_LOOPBACK=1 (tests/webhooks/conftest.py).
    dev = Strict(hooks_channel, new_partner)
    for url in ("http://127.0.0.1:9901/config_dump", "http://localhost:50051/"):
        assert dev.refused_url(url, (TEST,)) == "ADDRESS_NOT_ALLOWED"
    assert dev.create("http://127.0.0.1:3999/hooks", (TEST,)).url.endswith(":3999/hooks")


def test_the_development_switch_never_covers_a_live_endpoint(
    hooks_channel: grpc.Channel, new_partner: PartnerCreds
):
    dev = Strict(hooks_channel, new_partner)
    assert dev.refused_url("https://127.0.0.1:3999/hooks") == "ADDRESS_NOT_ALLOWED"
    assert dev.refused_url("http://127.0.0.1:3999/hooks", (TEST, LIVE)) == "ADDRESS_NOT_ALLOWED"
    created = dev.create("http://127.0.0.1:3999/hooks", (TEST,))
    # Adding live later is refused too (the stored URL is checked again).
    with pytest.raises(grpc.RpcError) as caught:
        dev.stub.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                webhook_endpoint=pb.WebhookEndpoint(id=created.id, environments=[TEST, LIVE]),
                update_mask=field_mask_pb2.FieldMask(paths=["environments"]),
            ),
            metadata=dev.auth,
        )
    assert grpc_error(caught.value).reason == "ADDRESS_NOT_ALLOWED"
