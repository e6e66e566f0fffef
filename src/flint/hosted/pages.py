"""Rendering hosted pages: templates with autoescape, the CSRF token of their
forms, their Content-Security-Policy, and the shared error page."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse

from flint.hosted.core import CoreError
from flint.hosted.security import content_security_policy
from flint.hosted.sessions import CSRF_FIELD
from flint.hosted.state import hosted, log_fields

TEMPLATES_DIR = Path(__file__).parent / "templates"
# The core's reason for a live page or payment with no acquirer configured.
LIVE_PAYMENTS_NOT_CONFIGURED = "LIVE_PAYMENTS_NOT_CONFIGURED"


def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    form_action: Iterable[str] = (),
) -> HTMLResponse:
    state = hosted(request)
    new_cookies: dict[str, str] = {}

    def csrf_token() -> str:
        return state.sessions.csrf_token(request, new_cookies)

    html = state.templates.get_template(name).render(
        {"csrf_field": CSRF_FIELD, "csrf_token": csrf_token, **(context or {})}
    )
    response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
    response.headers["content-security-policy"] = content_security_policy(form_action)
    state.sessions.set_cookies(response, new_cookies)
    return response


def error_page(
    request: Request,
    *,
    status_code: int,
    title: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"title": title, "message": message},
        status_code=status_code,
        headers=headers,
    )


def core_failure_page(request: Request, error: CoreError) -> HTMLResponse:
    """The page for a core failure that has no better answer."""
    log_fields(request).update(core_code=error.code.name, reason=error.reason)
    if error.reason == LIVE_PAYMENTS_NOT_CONFIGURED:
        # A live page with no acquirer behind it: say so instead of a card form.
        return error_page(
            request,
            status_code=503,
            title="Live payments are not available",
            message=(
                "This seller cannot take live payments yet: no payment processor is set up. "
                "No payment was taken. Contact the seller."
            ),
        )
    if error.unavailable:
        return error_page(
            request,
            status_code=503,
            title="Flint is temporarily unavailable",
            message="Please try again in a moment.",
            headers={"retry-after": "5"},
        )
    return error_page(
        request,
        status_code=500,
        title="Something went wrong",
        message="Flint could not complete this request. Please try again.",
    )


def csrf_refused(request: Request) -> HTMLResponse:
    log_fields(request).update(reason="CSRF_TOKEN_INVALID")
    return error_page(
        request,
        status_code=403,
        title="This form has expired",
        message=(
            "The form was not sent from this page, or it is too old. "
            "Go back, reload the page and try again. Cookies must be enabled."
        ),
    )


def csrf_ok(request: Request, form: FormData) -> bool:
    token = form.get(CSRF_FIELD)
    return isinstance(token, str) and hosted(request).sessions.csrf_valid(request, token)


def form_text(form: FormData, name: str) -> str:
    """One text field of a form; files and missing fields read as ""."""
    value = form.get(name)
    return value if isinstance(value, str) else ""
