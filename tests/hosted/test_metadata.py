"""RFC 8414 authorization server metadata."""

from __future__ import annotations

from starlette.testclient import TestClient

from flint.common.scopes import CATALOG
from flint.hosted import create_app
from tests.hosted.conftest import PUBLIC_URL, hosted_settings


def test_metadata_document_names_every_endpoint_under_the_issuer(client: TestClient) -> None:
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=300"
    doc = response.json()
    assert doc["issuer"] == PUBLIC_URL
    assert doc["authorization_endpoint"] == f"{PUBLIC_URL}/oauth/authorize"
    assert doc["token_endpoint"] == f"{PUBLIC_URL}/oauth/token"
    assert doc["revocation_endpoint"] == f"{PUBLIC_URL}/oauth/revoke"
    assert doc["introspection_endpoint"] == f"{PUBLIC_URL}/oauth/introspect"
    assert doc["jwks_uri"] == f"{PUBLIC_URL}/.well-known/jwks.json"


def test_metadata_document_advertises_code_flow_with_s256_pkce(client: TestClient) -> None:
    doc = client.get("/.well-known/oauth-authorization-server").json()
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert doc["authorization_response_iss_parameter_supported"] is True


def test_metadata_document_lists_the_scope_catalog(client: TestClient) -> None:
    doc = client.get("/.well-known/oauth-authorization-server").json()
    assert doc["scopes_supported"] == [scope.name for scope in CATALOG]


def test_issuer_has_no_trailing_slash() -> None:
    settings = hosted_settings(public_url="https://pay.example.com/")
    with TestClient(create_app(settings)) as https_client:
        doc = https_client.get("/.well-known/oauth-authorization-server").json()
    assert doc["issuer"] == "https://pay.example.com"
    assert doc["token_endpoint"] == "https://pay.example.com/oauth/token"
