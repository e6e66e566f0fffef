"""GET and POST /oauth/authorize: the merchant's consent to an app install
(RFC 6749 §4.1.1–4.1.2, RFC 7636, RFC 9207 `iss`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import grpc
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from flint.hosted.core import CoreError
from flint.hosted.oauth_errors import error_description
from flint.hosted.pages import core_failure_page, csrf_ok, csrf_refused, error_page, render
from flint.hosted.security import csp_origin
from flint.hosted.signin import signin_url
from flint.hosted.state import hosted, log_fields, request_id
from flint.installs.v1 import installs_service_pb2 as installs_pb
from flint.server.convert import ENVIRONMENT_NAMES

AUTHORIZE_PATH = "/oauth/authorize"
PARAMETER_NAMES = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "environment",
)
# Which client and where to send it: if either is ambiguous nothing may be redirected.
CLIENT_PARAMETERS = frozenset({"client_id", "redirect_uri"})


@dataclass(frozen=True)
class AuthorizeRequest:
    values: dict[str, str]
    repeated: tuple[str, ...]

    @classmethod
    def read(cls, source: ImmutableMultiDict[str, object]) -> AuthorizeRequest:
        values: dict[str, str] = {}
        repeated: list[str] = []
        for name in PARAMETER_NAMES:
            items = [v for v in source.getlist(name) if isinstance(v, str)]
            if len(items) > 1:
                repeated.append(name)
            values[name] = items[0] if items else ""
        return cls(values, tuple(repeated))

    @property
    def proto(self) -> installs_pb.AuthorizationParameters:
        return installs_pb.AuthorizationParameters(**self.values)

    @property
    def redirect_uri(self) -> str:
        return self.values["redirect_uri"]

    @property
    def state(self) -> str:
        return self.values["state"]

    def get_url(self) -> str:
        """This request as a GET /oauth/authorize path, to come back to after sign-in."""
        present = {name: value for name, value in self.values.items() if value}
        return f"{AUTHORIZE_PATH}?{urlencode(present)}"


def add_query(uri: str, parameters: Mapping[str, str]) -> str:
    """`uri` with `parameters` appended to its query. The existing query is kept
    byte for byte (RFC 6749 §3.1.2) and any fragment is dropped."""
    parts = urlsplit(uri)
    added = urlencode({key: value for key, value in parameters.items() if value})
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _redirect(uri: str, parameters: Mapping[str, str], *, status_code: int) -> Response:
    return RedirectResponse(add_query(uri, parameters), status_code=status_code)


def _error_redirect(
    request: Request,
    params: AuthorizeRequest,
    error: str,
    description: str,
    *,
    status_code: int,
) -> Response:
    log_fields(request).update(oauth_error=error)
    return _redirect(
        params.redirect_uri,
        {
            "error": error,
            "error_description": error_description(description),
            "state": params.state,
            "iss": hosted(request).settings.issuer,
        },
        status_code=status_code,
    )


def _invalid_request_page(request: Request, message: str) -> Response:
    return error_page(
        request,
        status_code=400,
        title="This app sent an invalid request",
        message=f"{message} Contact the app's developer; you have not been sent anywhere.",
    )


def _session_rejected(error: CoreError) -> bool:
    """The merchant's session expired or was revoked (not an OAuth error)."""
    return error.code == grpc.StatusCode.UNAUTHENTICATED and not error.oauth_error


def _authorization_failed(
    request: Request, params: AuthorizeRequest, error: CoreError, *, status_code: int
) -> Response:
    """RFC 6749 §4.1.2.1: redirect the error to the client only when the core
    vouched for the client and its redirect URI; otherwise show it here."""
    log_fields(request).update(reason=error.reason, oauth_error=error.oauth_error)
    if error.oauth_error:
        if error.redirect and params.redirect_uri:
            return _error_redirect(
                request, params, error.oauth_error, error.message, status_code=status_code
            )
        return _invalid_request_page(request, error.message)
    if error.code == grpc.StatusCode.PERMISSION_DENIED:
        return error_page(
            request,
            status_code=403,
            title="You cannot approve this app",
            message=error.message,
        )
    if error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        return _invalid_request_page(request, error.message)
    return core_failure_page(request, error)


def _to_signin(
    request: Request, params: AuthorizeRequest, *, status_code: int, drop_session: bool
) -> Response:
    response = RedirectResponse(signin_url(params.get_url()), status_code=status_code)
    if drop_session:
        # The core rejected the session cookie; drop it so the next visit is clean.
        hosted(request).sessions.sign_out(response)
    return response


async def authorize_page(request: Request) -> Response:
    params = AuthorizeRequest.read(request.query_params)
    if CLIENT_PARAMETERS.intersection(params.repeated):
        return _invalid_request_page(request, "The request names its client more than once.")
    state = hosted(request)
    core = state.core
    start = installs_pb.StartAuthorizationRequest(parameters=params.proto)
    session = state.sessions.current(request)
    if session is not None and not params.repeated:
        try:
            prompt = await core.call(
                core.oauth.StartAuthorization,
                start,
                credential=session.token,
                request_id=request_id(request),
            )
        except CoreError as error:
            if not _session_rejected(error):
                return _authorization_failed(request, params, error, status_code=302)
        else:
            return _consent_page(request, params, prompt)
    # Not signed in: validate the request before anything else, so a broken
    # request is answered now and not after the merchant signed in.
    try:
        await core.internal(core.oauth.StartAuthorization, start, request_id=request_id(request))
    except CoreError as error:
        return _authorization_failed(request, params, error, status_code=302)
    if params.repeated:
        return _error_redirect(
            request,
            params,
            "invalid_request",
            f"Parameter sent more than once: {', '.join(params.repeated)}",
            status_code=302,
        )
    return _to_signin(request, params, status_code=302, drop_session=session is not None)


def _change_text(prompt: installs_pb.AuthorizationPrompt, environment: str) -> str:
    env = environment.capitalize()
    existing = [
        ENVIRONMENT_NAMES[e].capitalize()
        for e in prompt.existing_environments
        if e in ENVIRONMENT_NAMES
    ]
    if prompt.change == installs_pb.INSTALL_CHANGE_NEW_INSTALL:
        return f"New install in {env}."
    if prompt.change == installs_pb.INSTALL_CHANGE_UPGRADE:
        if existing and env not in existing:
            return f"Adds {env} to your existing {' and '.join(existing)} install."
        return f"Asks for more permissions in {env}."
    if prompt.change == installs_pb.INSTALL_CHANGE_NONE:
        return f"Already installed in {env} with these permissions; approving reconnects it."
    return ""


def _icon_url(url: str) -> str:
    # The page's CSP loads images over https (or inline data) only.
    return url if url.startswith(("https://", "data:image/")) else ""


def _consent_page(
    request: Request, params: AuthorizeRequest, prompt: installs_pb.AuthorizationPrompt
) -> Response:
    environment = ENVIRONMENT_NAMES.get(prompt.environment, "test")
    redirect_origin = csp_origin(params.redirect_uri) if params.redirect_uri else None
    log_fields(request).update(app_id=prompt.app_id, environment=environment)
    return render(
        request,
        "consent.html",
        {
            "app_name": prompt.app_name,
            "app_icon_url": _icon_url(prompt.app_icon_url),
            "partner_name": prompt.partner_name,
            "merchant_name": prompt.merchant_name,
            "environment": environment,
            "change": _change_text(prompt, environment),
            "is_new": prompt.change == installs_pb.INSTALL_CHANGE_NEW_INSTALL,
            "scopes": [
                {"name": s.name, "description": s.description, "granted": s.granted}
                for s in prompt.scopes
            ],
            "redirect_host": urlsplit(params.redirect_uri).netloc if params.redirect_uri else "",
            "parameters": params.values,
            "authorize_url": params.get_url(),
        },
        form_action=[redirect_origin] if redirect_origin else [],
    )


async def authorize_decision(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return csrf_refused(request)
    params = AuthorizeRequest.read(form)
    if params.repeated:
        return _invalid_request_page(request, "The form was sent with repeated fields.")
    decision = form.get("decision")
    if decision not in ("approve", "deny"):
        return error_page(
            request,
            status_code=400,
            title="Choose Approve or Deny",
            message="Go back and choose whether to approve the app.",
        )
    state = hosted(request)
    session = state.sessions.current(request)
    if session is None:
        return _to_signin(request, params, status_code=303, drop_session=False)
    core = state.core
    log_fields(request).update(decision=decision)
    # After a POST, 303 makes every browser follow with a GET (RFC 9700 §4.12).
    try:
        if decision == "deny":
            # Validate client and redirect URI before sending the browser there.
            await core.call(
                core.oauth.StartAuthorization,
                installs_pb.StartAuthorizationRequest(parameters=params.proto),
                credential=session.token,
                request_id=request_id(request),
            )
        else:
            code = await core.call(
                core.oauth.ApproveAuthorization,
                installs_pb.ApproveAuthorizationRequest(parameters=params.proto),
                credential=session.token,
                request_id=request_id(request),
            )
    except CoreError as error:
        if _session_rejected(error):
            return _to_signin(request, params, status_code=303, drop_session=True)
        return _authorization_failed(request, params, error, status_code=303)
    if decision == "deny":
        if not params.redirect_uri:
            return _invalid_request_page(request, "The app did not say where to return.")
        return _error_redirect(
            request,
            params,
            "access_denied",
            "The merchant denied the request",
            status_code=303,
        )
    log_fields(request).update(install_id=code.install_id)
    target = code.redirect_uri or params.redirect_uri
    if not target:
        return _invalid_request_page(request, "The app did not say where to return.")
    return _redirect(
        target,
        {"code": code.code, "state": code.state or params.state, "iss": state.settings.issuer},
        status_code=303,
    )
