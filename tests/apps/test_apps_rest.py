"""AppsService over REST/JSON: real Envoy (gRPC-JSON transcoder) in front of the real
server. Errors arrive as google.rpc.Status JSON, whether the gRPC server or Envoy
itself refused the request."""

from __future__ import annotations

import secrets
import string
from typing import Any

import httpx
import pytest

from tests.conftest import MerchantCreds, PartnerCreds
from tests.errors import ErrorDetails, rest_error

pytestmark = pytest.mark.e2e

# google.rpc.Code numbers, as they appear in the JSON body.
INVALID_ARGUMENT = "3"
NOT_FOUND = "5"
PERMISSION_DENIED = "7"
UNAUTHENTICATED = "16"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def valid_app(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Loyalty Stars",
        "description": "Points for every order",
        "icon_url": "https://cdn.example.com/icon.png",
        "redirect_uris": ["https://loyalty.example.com/oauth/callback"],
        "requested_scopes": ["orders:read", "events:read"],
    }
    body.update(overrides)
    return body


def create(rest: httpx.Client, partner: PartnerCreds, **overrides: Any) -> dict[str, Any]:
    response = rest.post("/v1/apps", json=valid_app(**overrides), headers=auth(partner.key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    app: dict[str, Any] = response.json()
    return app


def get(rest: httpx.Client, partner: PartnerCreds, app_id: str) -> httpx.Response:
    return rest.get(f"/v1/apps/{app_id}", headers=auth(partner.key))


def refused(response: httpx.Response, status: int, code: str, reason: str) -> ErrorDetails:
    """Checks the HTTP status, JSON body, gRPC code number and ErrorInfo reason."""
    assert response.status_code == status, response.text
    details = rest_error(response)  # also asserts the JSON content type
    assert (details.code, details.reason) == (code, reason), response.text
    assert response.json()["details"][0]["domain"] == "flint.dev"
    return details


def refused_create(rest: httpx.Client, partner: PartnerCreds, body: object) -> httpx.Response:
    response = rest.post("/v1/apps", json=body, headers=auth(partner.key))
    # Nothing was created.
    listed = rest.get("/v1/apps", headers=auth(partner.key))
    assert listed.status_code == 200
    assert listed.json()["apps"] == []
    return response


# --- the happy path --------------------------------------------------------------


def test_create_app_returns_json_with_client_credentials_once(rest, new_partner):
    app = create(rest, new_partner)
    assert app["id"].startswith("app_")
    assert app["partner_id"] == new_partner.id
    assert app["client_id"].startswith("ca_")
    assert app["client_secret"].startswith("fcs_")
    assert app["status"] == "APP_STATUS_ACTIVE"  # enums as strings
    assert app["redirect_uris"] == ["https://loyalty.example.com/oauth/callback"]
    assert app["requested_scopes"] == ["orders:read", "events:read"]
    assert app["create_time"].endswith("Z")  # RFC 3339 timestamps
    assert app["update_time"] == app["create_time"]
    # Proto field names, not lowerCamelCase.
    assert "redirectUris" not in app
    assert "partnerId" not in app

    fetched = get(rest, new_partner, app["id"])
    assert fetched.status_code == 200
    body = fetched.json()
    assert body["client_secret"] == ""  # shown only once
    assert {k: v for k, v in body.items() if k != "client_secret"} == {
        k: v for k, v in app.items() if k != "client_secret"
    }


def test_list_scopes_over_rest(rest, new_partner):
    response = rest.get("/v1/scopes", headers=auth(new_partner.key))
    assert response.status_code == 200
    scopes = response.json()["scopes"]
    names = [scope["name"] for scope in scopes]
    assert "orders:read" in names
    assert "billing:write" in names
    assert all(scope["description"] for scope in scopes)


def test_update_with_update_mask_query_parameter_changes_only_masked_fields(rest, new_partner):
    app = create(rest, new_partner)
    response = rest.patch(
        f"/v1/apps/{app['id']}",
        params={"update_mask": "name"},
        json={"name": "Loyalty Stars Pro", "description": "ignored"},
        headers=auth(new_partner.key),
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["id"] == app["id"]
    assert updated["name"] == "Loyalty Stars Pro"
    assert updated["description"] == "Points for every order"
    assert updated["client_secret"] == ""
    assert updated["update_time"] >= app["update_time"]
    stored = get(rest, new_partner, app["id"]).json()
    assert stored["name"] == "Loyalty Stars Pro"
    assert stored["description"] == "Points for every order"


def test_update_mask_with_several_paths_and_an_enum_string(rest, new_partner):
    app = create(rest, new_partner)
    response = rest.patch(
        f"/v1/apps/{app['id']}",
        params={"update_mask": "status,description"},
        json={"status": "APP_STATUS_DISABLED", "description": "Paused", "name": "ignored"},
        headers=auth(new_partner.key),
    )
    assert response.status_code == 200, response.text
    stored = get(rest, new_partner, app["id"]).json()
    assert stored["status"] == "APP_STATUS_DISABLED"
    assert stored["description"] == "Paused"
    assert stored["name"] == "Loyalty Stars"


def test_delete_app_then_get_is_not_found(rest, new_partner):
    app = create(rest, new_partner)
    response = rest.delete(f"/v1/apps/{app['id']}", headers=auth(new_partner.key))
    assert response.status_code == 200, response.text
    assert response.json() == {}  # google.protobuf.Empty
    details = refused(get(rest, new_partner, app["id"]), 404, NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert app["id"] in details.message
    assert details.metadata == {"resource": "app", "id": app["id"]}


def test_rotate_secret_over_rest_issues_a_new_secret(rest, new_partner, db):
    from flint.apps.models import AppRecord
    from flint.common.credentials import hash_secret

    app = create(rest, new_partner)
    response = rest.post(
        f"/v1/apps/{app['id']}:rotate_secret", json={}, headers=auth(new_partner.key)
    )
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["id"] == app["id"]
    assert rotated["client_id"] == app["client_id"]
    assert rotated["client_secret"].startswith("fcs_")
    assert rotated["client_secret"] != app["client_secret"]
    with db.read() as session:
        stored = session.get(AppRecord, app["id"])
        assert stored is not None
        assert stored.client_secret_hash == hash_secret(rotated["client_secret"])


def test_list_apps_pages_with_page_size_and_next_page_token(rest, new_partner, other_partner):
    created = [create(rest, new_partner, name=f"App {i}")["id"] for i in range(5)]
    create(rest, other_partner, name="Not mine")
    seen: list[str] = []
    tokens: list[str] = []
    params: dict[str, str | int] = {"page_size": 2}
    while True:
        response = rest.get("/v1/apps", params=params, headers=auth(new_partner.key))
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"apps", "next_page_token"}
        assert len(page["apps"]) <= 2
        seen += [app["id"] for app in page["apps"]]
        assert all(app["client_secret"] == "" for app in page["apps"])
        if not page["next_page_token"]:
            break
        tokens.append(page["next_page_token"])
        params = {"page_size": 2, "page_token": page["next_page_token"]}
    assert len(tokens) == 2  # three pages: 2 + 2 + 1
    assert seen == list(reversed(created))  # newest first, only the partner's own


def test_list_without_page_size_uses_the_default(rest, new_partner):
    created = [create(rest, new_partner, name=f"App {i}")["id"] for i in range(3)]
    response = rest.get("/v1/apps", headers=auth(new_partner.key))
    assert response.status_code == 200
    page = response.json()
    assert [app["id"] for app in page["apps"]] == list(reversed(created))
    assert page["next_page_token"] == ""


# --- bad input -------------------------------------------------------------------


def test_missing_name_is_refused_as_field_required(rest, new_partner):
    body = valid_app()
    del body["name"]
    response = refused_create(rest, new_partner, body)
    details = refused(response, 400, INVALID_ARGUMENT, "FIELD_REQUIRED")
    assert details.fields == ["app.name"]


def test_unknown_enum_string_is_refused_by_envoy(rest, new_partner):
    response = refused_create(rest, new_partner, valid_app(status="APP_STATUS_BOGUS"))
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "app.status" in details.message
    assert "APP_STATUS_BOGUS" in details.message


def test_redirect_uri_that_is_not_a_url_is_refused(rest, new_partner):
    response = refused_create(rest, new_partner, valid_app(redirect_uris=["not a url"]))
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_URL")
    assert details.fields == ["app.redirect_uris[0]"]


def test_relative_redirect_uri_is_refused(rest, new_partner):
    uris = ["https://ok.example.com/cb", "/oauth/callback"]
    response = refused_create(rest, new_partner, valid_app(redirect_uris=uris))
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_URL")
    assert details.fields == ["app.redirect_uris[1]"]


def test_non_https_redirect_uri_is_refused_as_insecure(rest, new_partner):
    uris = ["http://shop.example.com/cb"]
    response = refused_create(rest, new_partner, valid_app(redirect_uris=uris))
    details = refused(response, 400, INVALID_ARGUMENT, "INSECURE_URL")
    assert details.fields == ["app.redirect_uris[0]"]


def test_unknown_scope_is_refused(rest, new_partner):
    scopes = ["orders:read", "orders:delete"]
    response = refused_create(rest, new_partner, valid_app(requested_scopes=scopes))
    details = refused(response, 400, INVALID_ARGUMENT, "UNKNOWN_SCOPE")
    assert details.fields == ["app.requested_scopes[1]"]


def test_over_long_name_is_refused(rest, new_partner):
    response = refused_create(rest, new_partner, valid_app(name="x" * 101))
    details = refused(response, 400, INVALID_ARGUMENT, "FIELD_TOO_LONG")
    assert details.fields == ["app.name"]


def test_every_bad_field_is_reported_over_rest(rest, new_partner):
    body = valid_app(name="", redirect_uris=["http://evil.example.com/"], requested_scopes=["x"])
    details = rest_error(refused_create(rest, new_partner, body))
    assert details.fields == ["app.name", "app.redirect_uris[0]", "app.requested_scopes[0]"]


def test_negative_page_size_is_refused(rest, new_partner):
    response = rest.get("/v1/apps", params={"page_size": -1}, headers=auth(new_partner.key))
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_PAGE_SIZE")
    assert details.fields == ["page_size"]


def test_non_numeric_page_size_is_refused_by_envoy(rest, new_partner):
    response = rest.get("/v1/apps", params={"page_size": "ten"}, headers=auth(new_partner.key))
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "page_size" in details.message


def test_forged_page_token_is_refused(rest, new_partner):
    response = rest.get(
        "/v1/apps", params={"page_token": "eyJhIjoiYXBwXzAwIn0="}, headers=auth(new_partner.key)
    )
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    assert details.fields == ["page_token"]


def test_unknown_query_parameter_is_refused_by_envoy(rest, new_partner):
    response = rest.get("/v1/apps", params={"colour": "red"}, headers=auth(new_partner.key))
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "colour" in details.message


def test_malformed_json_body_is_refused_by_envoy(rest, new_partner):
    response = rest.post(
        "/v1/apps",
        content=b'{"name": "Loyalty", "redirect_uris": [',
        headers={**auth(new_partner.key), "Content-Type": "application/json"},
    )
    refused(response, 400, INVALID_ARGUMENT, "INVALID_REQUEST")
    assert rest.get("/v1/apps", headers=auth(new_partner.key)).json()["apps"] == []


def test_body_id_conflicting_with_the_path_is_refused_by_envoy(rest, new_partner):
    app = create(rest, new_partner)
    response = rest.patch(
        f"/v1/apps/{app['id']}",
        params={"update_mask": "name"},
        json={"id": "app_somebody_else", "name": "Renamed"},
        headers=auth(new_partner.key),
    )
    details = refused(response, 400, INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "app_somebody_else" in details.message
    assert get(rest, new_partner, app["id"]).json()["name"] == "Loyalty Stars"


# --- credentials -----------------------------------------------------------------


def test_merchant_key_on_a_partner_method_is_permission_denied(rest, new_merchant: MerchantCreds):
    response = rest.post("/v1/apps", json=valid_app(), headers=auth(new_merchant.test_key))
    details = refused(response, 403, PERMISSION_DENIED, "PRINCIPAL_NOT_ALLOWED")
    assert details.metadata["principal"] == "merchant"


def test_missing_authorization_header_is_unauthenticated(rest):
    response = rest.post("/v1/apps", json=valid_app())
    details = refused(response, 401, UNAUTHENTICATED, "CREDENTIAL_MISSING")
    assert "Authorization" in details.message


def test_malformed_key_is_unauthenticated(rest):
    response = rest.get("/v1/apps", headers={"Authorization": "Bearer nonsense"})
    refused(response, 401, UNAUTHENTICATED, "CREDENTIAL_MALFORMED")


def test_authorization_without_bearer_scheme_is_malformed(rest, new_partner):
    response = rest.get("/v1/apps", headers={"Authorization": f"Basic {new_partner.key}"})
    refused(response, 401, UNAUTHENTICATED, "CREDENTIAL_MALFORMED")


def test_well_formed_unknown_partner_key_is_invalid(rest):
    alphabet = string.ascii_letters + string.digits
    key = "pak_" + "".join(secrets.choice(alphabet) for _ in range(40))
    response = rest.get("/v1/apps", headers=auth(key))
    refused(response, 401, UNAUTHENTICATED, "CREDENTIAL_INVALID")


def test_rotated_partner_key_is_revoked_and_the_new_one_works(rest, new_partner):
    response = rest.post(
        f"/v1/partners/{new_partner.id}:rotate_key", json={}, headers=auth(new_partner.key)
    )
    assert response.status_code == 200, response.text
    new_key = response.json()["secret"]
    assert new_key.startswith("pak_")
    assert new_key != new_partner.key
    assert response.json()["hint"] == f"pak_…{new_key[-4:]}"

    old = rest.get("/v1/apps", headers=auth(new_partner.key))
    refused(old, 401, UNAUTHENTICATED, "CREDENTIAL_REVOKED")
    fresh = PartnerCreds(new_partner.id, new_key)
    app = create(rest, fresh)
    assert app["partner_id"] == new_partner.id


# --- another partner's app -------------------------------------------------------


def test_another_partners_app_is_not_found_for_get(rest, new_partner, other_partner):
    app = create(rest, other_partner)
    details = refused(get(rest, new_partner, app["id"]), 404, NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert details.metadata["id"] == app["id"]


def test_another_partners_app_is_not_found_for_patch(rest, new_partner, other_partner):
    app = create(rest, other_partner)
    response = rest.patch(
        f"/v1/apps/{app['id']}",
        params={"update_mask": "name"},
        json={"name": "Mine now"},
        headers=auth(new_partner.key),
    )
    refused(response, 404, NOT_FOUND, "RESOURCE_NOT_FOUND")
    still = get(rest, other_partner, app["id"]).json()
    assert still["name"] == "Loyalty Stars"
    assert still["update_time"] == app["update_time"]


def test_another_partners_app_is_not_found_for_delete(rest, new_partner, other_partner):
    app = create(rest, other_partner)
    response = rest.delete(f"/v1/apps/{app['id']}", headers=auth(new_partner.key))
    refused(response, 404, NOT_FOUND, "RESOURCE_NOT_FOUND")
    still = get(rest, other_partner, app["id"])
    assert still.status_code == 200
    assert still.json()["name"] == "Loyalty Stars"


def test_another_partners_app_is_not_found_for_rotate_secret(rest, new_partner, other_partner):
    app = create(rest, other_partner)
    response = rest.post(
        f"/v1/apps/{app['id']}:rotate_secret", json={}, headers=auth(new_partner.key)
    )
    refused(response, 404, NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert get(rest, other_partner, app["id"]).json()["update_time"] == app["update_time"]
