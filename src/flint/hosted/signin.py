"""Merchant sign-in and sign-out on the hosted pages.

The core throttles sign-ins per (email, client address), per client address
and per trusted device (accounts/signin_throttle.py). This app tells it where
the browser is (security.client_ip: the X-Forwarded-For entry Envoy appended)
and which device it is (the device cookie, see sessions.py), and keeps the new
device token the core hands out at a successful sign-in."""

from __future__ import annotations

from datetime import UTC
from urllib.parse import urlencode

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.hosted.core import CoreError
from flint.hosted.pages import core_failure_page, csrf_ok, csrf_refused, form_text, render
from flint.hosted.security import DEFAULT_NEXT, client_ip, safe_next
from flint.hosted.sessions import MerchantSession
from flint.hosted.state import hosted, log_fields, request_id

SIGNIN_PATH = "/hosted/signin"
DEFAULT_RETRY_AFTER_SECONDS = 60
BAD_CREDENTIALS = "The email or password is not correct."
BAD_CREDENTIAL_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
)


def signin_url(next_path: str) -> str:
    return f"{SIGNIN_PATH}?{urlencode({'next': next_path})}"


def _signin_form(
    request: Request,
    *,
    next_path: str,
    email: str = "",
    error: str = "",
    notice: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "signin.html",
        {"next": next_path, "email": email, "error": error, "notice": notice},
        status_code=status_code,
        headers=headers,
    )


async def signin_page(request: Request) -> Response:
    notice = "You have signed out." if request.query_params.get("signed_out") else ""
    return _signin_form(
        request, next_path=safe_next(request.query_params.get("next")), notice=notice
    )


async def signin(request: Request) -> Response:
    form = await request.form()
    next_path = safe_next(form_text(form, "next"))
    if not csrf_ok(request, form):
        return csrf_refused(request)
    email, password = form_text(form, "email").strip(), form_text(form, "password")
    if not email or not password:
        return _signin_form(
            request,
            next_path=next_path,
            email=email,
            error="Enter your email and password.",
            status_code=400,
        )
    state = hosted(request)
    try:
        session = await state.core.internal(
            state.core.accounts.CreateMerchantSession,
            accounts_pb.CreateMerchantSessionRequest(
                email=email,
                password=password,
                client_ip=client_ip(request, state.settings.forwarded_hops),
                device_token=state.sessions.device_token(request),
            ),
            request_id=request_id(request),
        )
    except CoreError as error:
        return _signin_failed(request, error, next_path=next_path, email=email)
    log_fields(request).update(merchant_id=session.merchant_id)
    response = RedirectResponse(next_path, status_code=303)
    state.sessions.sign_in(
        response,
        MerchantSession(session.token, session.merchant_name),
        session.expire_time.ToDatetime(tzinfo=UTC),
    )
    if session.device_token:
        state.sessions.remember_device(response, session.device_token)
    return response


def _signin_failed(request: Request, error: CoreError, *, next_path: str, email: str) -> Response:
    log_fields(request).update(reason=error.reason or error.code.name)
    if error.reason == "RATE_LIMITED" or error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_after = _retry_after(error.metadata.get("retry_after_seconds", ""))
        return _signin_form(
            request,
            next_path=next_path,
            email=email,
            error=f"Too many sign-in attempts. Try again in {_wait_text(retry_after)}.",
            status_code=429,
            headers={"retry-after": str(retry_after)},
        )
    if error.code in BAD_CREDENTIAL_CODES:
        # One answer for an unknown email, a wrong password and a malformed
        # address, so the form does not reveal which accounts exist.
        return _signin_form(
            request, next_path=next_path, email=email, error=BAD_CREDENTIALS, status_code=401
        )
    return core_failure_page(request, error)


def _wait_text(seconds: int) -> str:
    """ "40 seconds", "1 minute", "15 minutes": the throttle's delays grow from
    seconds to minutes."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _retry_after(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        return DEFAULT_RETRY_AFTER_SECONDS
    return seconds if seconds > 0 else DEFAULT_RETRY_AFTER_SECONDS


async def signout(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return csrf_refused(request)
    state = hosted(request)
    session = state.sessions.current(request)
    if session is not None:
        try:
            await state.core.call(
                state.core.accounts.RevokeMerchantSession,
                accounts_pb.RevokeMerchantSessionRequest(),
                credential=session.token,
                request_id=request_id(request),
            )
        except CoreError as error:
            # The cookie goes anyway; an expired session needs no revoking.
            log_fields(request).update(revoke_failed=error.reason or error.code.name)
    next_path = safe_next(form_text(form, "next"))
    target = f"{SIGNIN_PATH}?{urlencode({'signed_out': '1', 'next': next_path})}"
    response = RedirectResponse(target, status_code=303)
    state.sessions.sign_out(response)
    return response


async def account_page(request: Request) -> Response:
    session = hosted(request).sessions.current(request)
    if session is None:
        return RedirectResponse(signin_url(DEFAULT_NEXT), status_code=302)
    return render(request, "account.html", {"merchant_name": session.merchant_name})
