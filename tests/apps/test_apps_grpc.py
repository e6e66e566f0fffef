"""AppsService over gRPC against the real server."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from flint.apps.v1 import apps_service_pb2 as pb
from flint.apps.v1 import apps_service_pb2_grpc as pb_grpc
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.errors import grpc_error


def valid_app(**overrides: object) -> pb.App:
    fields: dict[str, object] = {
        "name": "Loyalty Stars",
        "description": "Points for every order",
        "icon_url": "https://cdn.example.com/icon.png",
        "redirect_uris": ["https://loyalty.example.com/oauth/callback"],
        "requested_scopes": ["orders:read", "events:read"],
    }
    fields.update(overrides)
    return pb.App(**fields)  # type: ignore[arg-type]


def create(stub: pb_grpc.AppsServiceStub, partner: PartnerCreds, app: pb.App) -> pb.App:
    return stub.CreateApp(pb.CreateAppRequest(app=app), metadata=bearer(partner.key))


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_create_app_returns_client_credentials_once(apps_stub, new_partner):
    app = create(apps_stub, new_partner, valid_app())
    assert app.id.startswith("app_")
    assert app.partner_id == new_partner.id
    assert app.client_id.startswith("ca_")
    assert app.client_secret.startswith("fcs_")
    assert app.status == pb.APP_STATUS_ACTIVE
    assert list(app.requested_scopes) == ["orders:read", "events:read"]
    fetched = apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=bearer(new_partner.key))
    assert fetched.client_secret == ""
    assert fetched.client_id == app.client_id
    assert fetched.name == "Loyalty Stars"


def test_redirect_uris_are_stored_exactly(apps_stub, new_partner):
    uris = [
        "https://Shop.Example.com/cb/?a=1&b=2",
        "http://localhost:3000/callback",
        "http://127.0.0.1:8765/oauth/cb/",
    ]
    app = create(apps_stub, new_partner, valid_app(redirect_uris=uris))
    fetched = apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=bearer(new_partner.key))
    assert list(fetched.redirect_uris) == uris


def test_update_app_changes_only_masked_fields(apps_stub, new_partner):
    app = create(apps_stub, new_partner, valid_app())
    updated = apps_stub.UpdateApp(
        pb.UpdateAppRequest(
            app=pb.App(id=app.id, name="Loyalty Stars Pro", description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=bearer(new_partner.key),
    )
    assert updated.name == "Loyalty Stars Pro"
    assert updated.description == "Points for every order"
    assert updated.update_time.ToDatetime() >= app.update_time.ToDatetime()


def test_update_without_mask_sets_populated_fields(apps_stub, new_partner):
    app = create(apps_stub, new_partner, valid_app())
    updated = apps_stub.UpdateApp(
        pb.UpdateAppRequest(app=pb.App(id=app.id, status=pb.APP_STATUS_DISABLED)),
        metadata=bearer(new_partner.key),
    )
    assert updated.status == pb.APP_STATUS_DISABLED
    assert updated.name == "Loyalty Stars"


def test_update_without_mask_that_sets_nothing_is_refused(apps_stub, new_partner):
    app = create(apps_stub, new_partner, valid_app())
    with pytest.raises(grpc.RpcError) as raised:
        apps_stub.UpdateApp(
            pb.UpdateAppRequest(app=pb.App(id=app.id)), metadata=bearer(new_partner.key)
        )
    details = grpc_error(raised.value)
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "FIELD_REQUIRED",
        ["update_mask"],
    )


def test_rotate_secret_issues_a_new_secret(apps_stub, new_partner, db):
    from flint.apps.models import AppRecord
    from flint.common.credentials import hash_secret

    app = create(apps_stub, new_partner, valid_app())
    rotated = apps_stub.RotateAppSecret(
        pb.RotateAppSecretRequest(id=app.id), metadata=bearer(new_partner.key)
    )
    assert rotated.client_secret.startswith("fcs_")
    assert rotated.client_secret != app.client_secret
    with db.read() as session:
        stored = session.get(AppRecord, app.id)
        assert stored is not None
        assert stored.client_secret_hash == hash_secret(rotated.client_secret)
        assert app.client_secret not in stored.client_secret_hash


def test_delete_app_then_get_is_not_found(apps_stub, new_partner):
    app = create(apps_stub, new_partner, valid_app())
    apps_stub.DeleteApp(pb.DeleteAppRequest(id=app.id), metadata=bearer(new_partner.key))
    error = refused(
        lambda: apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=bearer(new_partner.key))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_list_apps_pages_through_only_own_apps(apps_stub, new_partner, other_partner):
    created = [create(apps_stub, new_partner, valid_app(name=f"App {i}")).id for i in range(5)]
    create(apps_stub, other_partner, valid_app(name="Not mine"))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = apps_stub.ListApps(
            pb.ListAppsRequest(page_size=2, page_token=token), metadata=bearer(new_partner.key)
        )
        pages += 1
        assert len(page.apps) <= 2
        seen += [app.id for app in page.apps]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(created))  # newest first


def test_list_page_size_above_maximum_is_coerced(apps_stub, new_partner):
    create(apps_stub, new_partner, valid_app())
    page = apps_stub.ListApps(pb.ListAppsRequest(page_size=5000), metadata=bearer(new_partner.key))
    assert len(page.apps) == 1


def test_admin_sees_every_partners_apps(apps_stub, new_partner, admin_key):
    app = create(apps_stub, new_partner, valid_app())
    fetched = apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=bearer(admin_key))
    assert fetched.partner_id == new_partner.id


def test_scope_catalog_is_published(apps_stub, new_partner):
    catalog = apps_stub.ListScopes(pb.ListScopesRequest(), metadata=bearer(new_partner.key))
    names = [scope.name for scope in catalog.scopes]
    assert "orders:read" in names
    assert "billing:write" in names
    assert all(scope.description for scope in catalog.scopes)


# --- refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"name": ""}, "app.name", "FIELD_REQUIRED"),
        ({"name": "x" * 101}, "app.name", "FIELD_TOO_LONG"),
        ({"description": "x" * 2001}, "app.description", "FIELD_TOO_LONG"),
        ({"redirect_uris": []}, "app.redirect_uris", "FIELD_REQUIRED"),
        ({"redirect_uris": ["not a url"]}, "app.redirect_uris[0]", "INVALID_URL"),
        ({"redirect_uris": ["/relative/path"]}, "app.redirect_uris[0]", "INVALID_URL"),
        ({"redirect_uris": ["ftp://example.com/cb"]}, "app.redirect_uris[0]", "INVALID_URL"),
        (
            {"redirect_uris": ["https://example.com/cb#frag"]},
            "app.redirect_uris[0]",
            "INVALID_URL",
        ),
        (
            {"redirect_uris": ["http://shop.example.com/cb"]},
            "app.redirect_uris[0]",
            "INSECURE_URL",
        ),
        ({"icon_url": "javascript:alert(1)"}, "app.icon_url", "INVALID_URL"),
        ({"support_url": "http://support.example.com"}, "app.support_url", "INSECURE_URL"),
        ({"requested_scopes": ["orders:delete"]}, "app.requested_scopes[0]", "UNKNOWN_SCOPE"),
        ({"status": 42}, "app.status", "UNKNOWN_ENUM_VALUE"),
    ],
    ids=[
        "missing-name",
        "over-long-name",
        "over-long-description",
        "no-redirect-uri",
        "redirect-uri-not-a-url",
        "relative-redirect-uri",
        "ftp-redirect-uri",
        "redirect-uri-with-fragment",
        "non-https-redirect-uri",
        "javascript-icon-url",
        "http-support-url",
        "unknown-scope",
        "unknown-enum-value",
    ],
)
def test_create_app_refuses_bad_input(apps_stub, new_partner, overrides, field, reason):
    error = refused(lambda: create(apps_stub, new_partner, valid_app(**overrides)))
    details = grpc_error(error)
    assert details.code == "INVALID_ARGUMENT"
    assert details.reason == reason
    assert field in details.fields


def test_create_app_reports_every_bad_field(apps_stub, new_partner):
    app = valid_app(name="", redirect_uris=["http://evil.example.com/"], requested_scopes=["x"])
    details = grpc_error(refused(lambda: create(apps_stub, new_partner, app)))
    assert details.fields == ["app.name", "app.redirect_uris[0]", "app.requested_scopes[0]"]


def test_negative_page_size_is_refused(apps_stub, new_partner):
    details = grpc_error(
        refused(
            lambda: apps_stub.ListApps(
                pb.ListAppsRequest(page_size=-1), metadata=bearer(new_partner.key)
            )
        )
    )
    assert (details.code, details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        "INVALID_PAGE_SIZE",
        ["page_size"],
    )


def test_forged_page_token_is_refused(apps_stub, new_partner):
    details = grpc_error(
        refused(
            lambda: apps_stub.ListApps(
                pb.ListAppsRequest(page_token="eyJhIjoiYXBwXzAwIn0="),
                metadata=bearer(new_partner.key),
            )
        )
    )
    assert (details.reason, details.fields) == ("INVALID_PAGE_TOKEN", ["page_token"])


def test_page_token_of_another_partner_is_refused(apps_stub, new_partner, other_partner):
    for i in range(3):
        create(apps_stub, other_partner, valid_app(name=f"Rival {i}"))
    page = apps_stub.ListApps(pb.ListAppsRequest(page_size=1), metadata=bearer(other_partner.key))
    assert page.next_page_token
    details = grpc_error(
        refused(
            lambda: apps_stub.ListApps(
                pb.ListAppsRequest(page_token=page.next_page_token),
                metadata=bearer(new_partner.key),
            )
        )
    )
    assert details.reason == "INVALID_PAGE_TOKEN"


def test_unknown_update_mask_path_is_refused(apps_stub, new_partner):
    app = create(apps_stub, new_partner, valid_app())
    details = grpc_error(
        refused(
            lambda: apps_stub.UpdateApp(
                pb.UpdateAppRequest(
                    app=pb.App(id=app.id, client_id="ca_mine"),
                    update_mask=field_mask_pb2.FieldMask(paths=["client_id"]),
                ),
                metadata=bearer(new_partner.key),
            )
        )
    )
    assert (details.reason, details.fields) == (
        "UNKNOWN_FIELD_MASK_PATH",
        ["update_mask.paths[0]"],
    )


def test_another_partners_app_is_not_found(apps_stub, new_partner, other_partner):
    app = create(apps_stub, other_partner, valid_app())
    for call in (
        lambda: apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=bearer(new_partner.key)),
        lambda: apps_stub.UpdateApp(
            pb.UpdateAppRequest(app=pb.App(id=app.id, name="Mine now")),
            metadata=bearer(new_partner.key),
        ),
        lambda: apps_stub.DeleteApp(
            pb.DeleteAppRequest(id=app.id), metadata=bearer(new_partner.key)
        ),
        lambda: apps_stub.RotateAppSecret(
            pb.RotateAppSecretRequest(id=app.id), metadata=bearer(new_partner.key)
        ),
    ):
        details = grpc_error(refused(call))
        assert (details.code, details.reason) == ("NOT_FOUND", "RESOURCE_NOT_FOUND")
    # …and the app is untouched.
    still = apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=bearer(other_partner.key))
    assert still.name == app.name


def test_merchant_key_cannot_call_partner_methods(apps_stub, new_merchant: MerchantCreds):
    details = grpc_error(
        refused(
            lambda: apps_stub.CreateApp(
                pb.CreateAppRequest(app=valid_app()), metadata=bearer(new_merchant.test_key)
            )
        )
    )
    assert (details.code, details.reason) == ("PERMISSION_DENIED", "PRINCIPAL_NOT_ALLOWED")
