"""The OAuth endpoints that machines call: token (RFC 6749 §3.2, §5), revocation
(RFC 7009), introspection (RFC 7662), the JWKS, and the authorization server
metadata (RFC 8414)."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flint.common.scopes import CATALOG
from flint.hosted.client_auth import (
    BASIC_CHALLENGE,
    ClientCredentials,
    client_credentials,
    single_values,
)
from flint.hosted.core import CoreError
from flint.hosted.oauth_errors import OAuthRequestError, error_description
from flint.hosted.state import hosted, log_fields, request_id
from flint.installs.v1 import installs_service_pb2 as installs_pb

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
PUBLIC_CACHE_SECONDS = 300
# Tokens the core does not know: RFC 7009 and RFC 7662 answer them without an error.
UNKNOWN_TOKEN_ERRORS = frozenset({"invalid_grant", "invalid_token"})


def oauth_error(error: str, description: str = "") -> JSONResponse:
    body = {"error": error}
    if description:
        body["error_description"] = error_description(description)
    headers = dict(NO_STORE)
    status_code = 400
    if error == "invalid_client":
        status_code = 401
        headers["www-authenticate"] = BASIC_CHALLENGE
    elif error == "server_error":
        status_code = 500
    elif error == "temporarily_unavailable":
        status_code = 503
    return JSONResponse(body, status_code=status_code, headers=headers)


def _core_failed(request: Request, error: CoreError) -> JSONResponse:
    log_fields(request).update(reason=error.reason, oauth_error=error.oauth_error)
    if error.oauth_error:
        return oauth_error(error.oauth_error, error.message)
    if error.unavailable:
        return oauth_error("temporarily_unavailable", "Please retry shortly")
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        return oauth_error("invalid_request", error.message)
    # Anything else (the internal key refused, a bug) is ours, not the client's.
    log_fields(request).update(core_code=error.code.name)
    return oauth_error("server_error", "The authorization server failed")


async def _client_request(request: Request) -> tuple[dict[str, str], ClientCredentials]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise OAuthRequestError("invalid_request", f"The body must be {FORM_CONTENT_TYPE}")
    form = single_values(await request.form())
    credentials = client_credentials(request.headers.get("authorization"), form)
    log_fields(request).update(
        client_id=credentials.client_id[:100], auth_method=credentials.method
    )
    return form, credentials


def _refused(request: Request, error: OAuthRequestError) -> JSONResponse:
    log_fields(request).update(oauth_error=error.error)
    return oauth_error(error.error, error.description)


async def token(request: Request) -> Response:
    try:
        form, client = await _client_request(request)
    except OAuthRequestError as error:
        return _refused(request, error)
    log_fields(request).update(grant_type=form.get("grant_type", ""))
    core = hosted(request).core
    try:
        issued = await core.internal(
            core.oauth.ExchangeToken,
            installs_pb.ExchangeTokenRequest(
                grant_type=form.get("grant_type", ""),
                code=form.get("code", ""),
                redirect_uri=form.get("redirect_uri", ""),
                code_verifier=form.get("code_verifier", ""),
                refresh_token=form.get("refresh_token", ""),
                client_id=client.client_id,
                client_secret=client.client_secret,
            ),
            request_id=request_id(request),
        )
    except CoreError as error:
        return _core_failed(request, error)
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": issued.token_type or "Bearer",
        "expires_in": issued.expires_in,
    }
    if issued.refresh_token:
        body["refresh_token"] = issued.refresh_token
    body |= {
        "scope": issued.scope,
        "install_id": issued.install_id,
        "merchant_id": issued.merchant_id,
        "environment": issued.environment,
    }
    log_fields(request).update(install_id=issued.install_id)
    return JSONResponse(body, headers=NO_STORE)


async def revoke(request: Request) -> Response:
    try:
        form, client = await _client_request(request)
    except OAuthRequestError as error:
        return _refused(request, error)
    if not form.get("token"):
        return _refused(request, OAuthRequestError("invalid_request", "token is required"))
    core = hosted(request).core
    try:
        await core.internal(
            core.oauth.RevokeToken,
            installs_pb.RevokeTokenRequest(
                token=form["token"],
                token_type_hint=form.get("token_type_hint", ""),
                client_id=client.client_id,
                client_secret=client.client_secret,
            ),
            request_id=request_id(request),
        )
    except CoreError as error:
        if error.oauth_error not in UNKNOWN_TOKEN_ERRORS:
            return _core_failed(request, error)
    return Response(status_code=200, headers=NO_STORE)


INTROSPECTION_FIELDS = (
    "scope",
    "client_id",
    "token_type",
    "exp",
    "iat",
    "sub",
    "aud",
    "iss",
    "install_id",
    "merchant_id",
    "environment",
)


async def introspect(request: Request) -> Response:
    try:
        form, client = await _client_request(request)
        if client.method == "none" or not client.client_secret:
            # RFC 7662 §2.1: the endpoint must not answer unauthenticated callers
            # (HTTP Basic with an empty secret authenticates nobody either).
            raise OAuthRequestError("invalid_client", "Introspection needs the client secret")
        if not form.get("token"):
            raise OAuthRequestError("invalid_request", "token is required")
    except OAuthRequestError as error:
        return _refused(request, error)
    core = hosted(request).core
    try:
        result = await core.internal(
            core.oauth.IntrospectToken,
            installs_pb.IntrospectTokenRequest(
                token=form["token"],
                token_type_hint=form.get("token_type_hint", ""),
                client_id=client.client_id,
                client_secret=client.client_secret,
            ),
            request_id=request_id(request),
        )
    except CoreError as error:
        if error.oauth_error in UNKNOWN_TOKEN_ERRORS:
            return JSONResponse({"active": False}, headers=NO_STORE)
        return _core_failed(request, error)
    if not result.active:
        return JSONResponse({"active": False}, headers=NO_STORE)
    body: dict[str, Any] = {"active": True}
    for name in INTROSPECTION_FIELDS:
        value = getattr(result, name)
        if value:
            body[name] = value
    return JSONResponse(body, headers=NO_STORE)


def _public_json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"cache-control": f"public, max-age={PUBLIC_CACHE_SECONDS}"})


async def jwks(request: Request) -> Response:
    core = hosted(request).core
    try:
        keys = await core.internal(
            core.oauth.GetJwks, installs_pb.GetJwksRequest(), request_id=request_id(request)
        )
    except CoreError as error:
        log_fields(request).update(reason=error.reason, core_code=error.code.name)
        return JSONResponse({"error": "temporarily_unavailable"}, status_code=503, headers=NO_STORE)
    return _public_json(
        {
            "keys": [
                {
                    name: getattr(key, name)
                    for name in ("kty", "kid", "use", "alg", "n", "e")
                    if getattr(key, name)
                }
                for key in keys.keys
            ]
        }
    )


def server_metadata(issuer: str) -> dict[str, Any]:
    """RFC 8414 authorization server metadata for `issuer`."""
    secret_auth = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        # Every app is issued a secret and must authenticate with it at the
        # token endpoint; revocation also takes a bare client_id (it then
        # revokes nothing a secret-authenticated client was issued).
        "token_endpoint_auth_methods_supported": secret_auth,
        "revocation_endpoint_auth_methods_supported": [*secret_auth, "none"],
        "introspection_endpoint_auth_methods_supported": secret_auth,
        "scopes_supported": [scope.name for scope in CATALOG],
        "authorization_response_iss_parameter_supported": True,
    }


async def metadata(request: Request) -> Response:
    return _public_json(server_metadata(hosted(request).settings.issuer))
