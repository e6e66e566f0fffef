"""GET and POST /l/{payment_link_id}: a payment link's landing page, and the
buyer choosing to pay.

A payment link is a plain URL that merchants paste into emails, chats and QR
codes, so it is fetched by far more than buyers: link previews, crawlers,
prefetches, link checkers, scripts. The GET therefore only reads
(GetPaymentLinkPage) and renders the link's products with a "Continue to
payment" button; nothing is written, so no robot can fill the merchant's
orders, sessions, events and webhooks. The order and checkout session are
opened by the POST of that button (OpenPaymentLink), which needs the page's
CSRF token and so a browser that loaded the page, and the buyer then pays on
the ordinary checkout page (/pay/{id}), where declines, retries and the
at-most-once charge already live.

Why not Stripe's way (a checkout session per visit that expires without
events): it still writes per anonymous GET, and every row needs expiring and
sweeping. Why not one step (card form on the landing page): a decline would
leave an order behind the landing page with nowhere to retry; the checkout
page is the one place that knows how to re-show a payable session.

A double submit (double click, a retried POST) must not open two sessions
that could both be paid: each rendered form carries a random nonce, sent to
the core as the idempotency key, so every POST of one form answers the same
checkout session."""

from __future__ import annotations

import re
import secrets

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.hosted.core import CoreError
from flint.hosted.pages import (
    LIVE_PAYMENTS_NOT_CONFIGURED,
    core_failure_page,
    csrf_ok,
    form_text,
    render,
)
from flint.hosted.pay import (
    CHECKOUT,
    ROBOTS_HEADERS,
    not_found_page,
    page_context,
    status_page,
    valid_object_id,
)
from flint.hosted.state import hosted, log_fields, request_id

PAYMENT_LINK_PATH = "/l/{payment_link_id}"
NO_STORE_HEADERS = {"cache-control": "no-store", **ROBOTS_HEADERS}
NONCE_FIELD = "nonce"
# secrets.token_urlsafe(24): 32 characters of the URL-safe alphabet.
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")
STALE_FORM_MESSAGE = "For your security this page has expired. Press the button again."
IN_PROGRESS_MESSAGE = "Your payment page is being opened. Press the button again in a moment."


def link_url(link_id: str) -> str:
    return f"/l/{link_id}"


def idempotency_key(link_id: str, nonce: str) -> str:
    """The core's idempotency key for one rendered landing form."""
    return f"payment-link:{link_id}:{nonce}"


async def payment_link_page(request: Request) -> Response:
    link_id = _link_id(request)
    if link_id is None:
        return not_found_page(request)
    return await _landing(request, link_id)


async def open_payment_link(request: Request) -> Response:
    link_id = _link_id(request)
    if link_id is None:
        return not_found_page(request)
    form = await request.form()
    nonce = form_text(form, NONCE_FIELD)
    if not csrf_ok(request, form) or not _NONCE.fullmatch(nonce):
        log_fields(request).update(reason="CSRF_TOKEN_INVALID")
        return await _landing(request, link_id, form_error=STALE_FORM_MESSAGE, status_code=403)
    state = hosted(request)
    try:
        page = await state.core.internal(
            state.core.pay.OpenPaymentLink,
            pay_pb.OpenPaymentLinkRequest(id=link_id),
            request_id=request_id(request),
            idempotency_key=idempotency_key(link_id, nonce),
        )
    except CoreError as error:
        log_fields(request).update(core_code=error.code.name, reason=error.reason)
        if error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return not_found_page(request)
        if error.reason == LIVE_PAYMENTS_NOT_CONFIGURED:
            return core_failure_page(request, error)
        if error.code == grpc.StatusCode.FAILED_PRECONDITION:
            # PAYMENT_LINK_INACTIVE
            return _inactive_page(request)
        if error.code == grpc.StatusCode.ABORTED:
            # IDEMPOTENCY_KEY_IN_USE: the first submit of this form is still
            # opening the session; the next press answers the same session.
            return await _landing(
                request, link_id, form_error=IN_PROGRESS_MESSAGE, status_code=409, nonce=nonce
            )
        return core_failure_page(request, error)
    if page.state != pay_pb.PAY_PAGE_STATE_PAYABLE or not valid_object_id(page.id):
        return _inactive_page(request)
    log_fields(request).update(checkout_session_id=page.id)
    return RedirectResponse(CHECKOUT.url(page.id), status_code=303, headers=NO_STORE_HEADERS)


async def _landing(
    request: Request,
    link_id: str,
    *,
    form_error: str = "",
    status_code: int = 200,
    nonce: str = "",
) -> Response:
    """The link's products and a button that opens a checkout session; a new
    nonce per rendering (one form, one session), unless re-showing a form
    whose session is still being opened."""
    try:
        page = await hosted(request).core.internal(
            hosted(request).core.pay.GetPaymentLinkPage,
            pay_pb.GetPaymentLinkPageRequest(id=link_id),
            request_id=request_id(request),
        )
    except CoreError as error:
        log_fields(request).update(core_code=error.code.name, reason=error.reason)
        if error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return not_found_page(request)
        return core_failure_page(request, error)
    if page.state != pay_pb.PAY_PAGE_STATE_PAYABLE:
        return _inactive_page(request)
    return render(
        request,
        "payment_link.html",
        {
            **page_context(page),
            "action": link_url(link_id),
            "nonce_field": NONCE_FIELD,
            "nonce": nonce or secrets.token_urlsafe(24),
            "card_hint": False,
            "form_error": form_error,
        },
        status_code=status_code,
        headers=NO_STORE_HEADERS,
    )


def _link_id(request: Request) -> str | None:
    link_id: str = request.path_params["payment_link_id"]
    if not valid_object_id(link_id):
        return None
    log_fields(request).update(payment_link_id=link_id)
    return link_id


def _inactive_page(request: Request) -> Response:
    return status_page(
        request,
        status_code=410,
        outcome="closed",
        title="This link is no longer active",
        message="The seller has turned off this payment link. Ask them for a new one.",
        headers=NO_STORE_HEADERS,
    )
