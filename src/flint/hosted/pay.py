"""The buyer's hosted payment pages: a checkout session (GET and POST
/pay/{id}) and an invoice (GET and POST /i/{id}).

Buyers are not signed in: the object id in the URL is their only credential,
and the core's PayService answers only what the page shows. Forms carry the
usual CSRF token, bound to a per-browser cookie (see sessions.py), which works
without any session.

Every POST either redirects (303) to where the core says the buyer goes after
paying, or shows the page again with what went wrong and an empty card form:
the card number and CVC are never echoed into a page or written to a log."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import grpc
from babel.dates import format_date
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.hosted.amounts import LOCALE, format_amount
from flint.hosted.card_form import (
    CVC,
    CVC_FIELD,
    EXPIRY,
    EXPIRY_FIELD,
    NUMBER,
    NUMBER_FIELD,
    decline_message,
    read_card,
    violation_errors,
)
from flint.hosted.core import Core, CoreError
from flint.hosted.pages import core_failure_page, csrf_ok, render
from flint.hosted.security import csp_origin, web_url
from flint.hosted.state import hosted, log_fields, request_id

# Flint ids are `prefix_ulid`; anything else cannot name an object, so it is
# answered without asking the core.
_OBJECT_ID = re.compile(r"[A-Za-z0-9_]{1,100}")
# Hosted payment pages are per-buyer: keep them out of search indexes.
ROBOTS_HEADERS = {"x-robots-tag": "noindex, nofollow"}

CSRF_MESSAGE = (
    "For your security this form has expired. Enter your card details again. "
    "Cookies must be enabled to pay."
)
INVALID_CARD_MESSAGE = "These card details could not be used. Check them and try again."
NOT_PAYABLE_MESSAGE = "This payment could not be made. Try again, or contact the seller."

STATE_NAMES = {
    pay_pb.PAY_PAGE_STATE_PAYABLE: "payable",
    pay_pb.PAY_PAGE_STATE_PAID: "paid",
    pay_pb.PAY_PAGE_STATE_EXPIRED: "expired",
    pay_pb.PAY_PAGE_STATE_CLOSED: "closed",
}

Loader = Callable[[Core, str, str], Awaitable[pay_pb.PayPage]]
Payer = Callable[[Core, str, pay_pb.CardDetails, str], Awaitable[pay_pb.PayResult]]


@dataclass(frozen=True)
class PageKind:
    """What differs between a checkout page and an invoice page."""

    name: str  # "checkout" or "invoice", as the pages name it
    path_param: str  # the route's parameter, also the log field of the id
    prefix: str  # "/pay/" or "/i/"
    load: Loader
    pay: Payer

    def url(self, object_id: str) -> str:
        return f"{self.prefix}{object_id}"


async def _load_checkout(core: Core, object_id: str, rid: str) -> pay_pb.PayPage:
    return await core.internal(
        core.pay.GetCheckoutPage, pay_pb.GetCheckoutPageRequest(id=object_id), request_id=rid
    )


async def _pay_checkout(
    core: Core, object_id: str, card: pay_pb.CardDetails, rid: str
) -> pay_pb.PayResult:
    return await core.internal(
        core.pay.PayCheckoutSession,
        pay_pb.PayCheckoutSessionRequest(id=object_id, card=card),
        request_id=rid,
    )


async def _load_invoice(core: Core, object_id: str, rid: str) -> pay_pb.PayPage:
    return await core.internal(
        core.pay.GetInvoicePage, pay_pb.GetInvoicePageRequest(id=object_id), request_id=rid
    )


async def _pay_invoice(
    core: Core, object_id: str, card: pay_pb.CardDetails, rid: str
) -> pay_pb.PayResult:
    return await core.internal(
        core.pay.PayInvoice, pay_pb.PayInvoiceRequest(id=object_id, card=card), request_id=rid
    )


CHECKOUT = PageKind("checkout", "checkout_session_id", "/pay/", _load_checkout, _pay_checkout)
INVOICE = PageKind("invoice", "invoice_id", "/i/", _load_invoice, _pay_invoice)
CHECKOUT_PATH = f"{CHECKOUT.prefix}{{{CHECKOUT.path_param}}}"
INVOICE_PATH = f"{INVOICE.prefix}{{{INVOICE.path_param}}}"


# --- handlers -------------------------------------------------------------------


async def checkout_page(request: Request) -> Response:
    return await _show(request, CHECKOUT)


async def checkout_pay(request: Request) -> Response:
    return await _submit(request, CHECKOUT)


async def invoice_page(request: Request) -> Response:
    return await _show(request, INVOICE)


async def invoice_pay(request: Request) -> Response:
    return await _submit(request, INVOICE)


async def _show(request: Request, kind: PageKind) -> Response:
    object_id = _object_id(request, kind)
    if object_id is None:
        return not_found_page(request)
    return await _reshow(request, kind, object_id)


async def _submit(request: Request, kind: PageKind) -> Response:
    object_id = _object_id(request, kind)
    if object_id is None:
        return not_found_page(request)
    form = await request.form()
    if not csrf_ok(request, form):
        # A forged post learns nothing from the page it cannot read; a buyer
        # whose form went stale gets a fresh one instead of a dead end.
        log_fields(request).update(reason="CSRF_TOKEN_INVALID")
        return await _reshow(request, kind, object_id, form_error=CSRF_MESSAGE, status_code=403)
    entered = read_card(form)
    if entered.card is None:
        log_fields(request).update(reason="CARD_INPUT_INVALID", fields=",".join(entered.errors))
        return await _reshow(request, kind, object_id, errors=entered.errors, status_code=400)
    try:
        result = await kind.pay(hosted(request).core, object_id, entered.card, request_id(request))
    except CoreError as error:
        return await _payment_refused(request, kind, object_id, error)
    if not result.succeeded:
        log_fields(request).update(outcome="declined", decline_code=result.decline_code)
        return await _reshow(
            request,
            kind,
            object_id,
            form_error=decline_message(result.decline_code),
            status_code=402,
        )
    log_fields(request).update(outcome="paid", payment_id=result.payment_id)
    # The merchant's page, or this one (which now says "paid"). 303: the
    # browser follows with a GET, and reloading it does not post again.
    target = web_url(result.redirect_url) or kind.url(object_id)
    return RedirectResponse(target, status_code=303)


async def _payment_refused(
    request: Request, kind: PageKind, object_id: str, error: CoreError
) -> Response:
    log_fields(request).update(core_code=error.code.name, reason=error.reason)
    if error.code == grpc.StatusCode.NOT_FOUND:
        return not_found_page(request)
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        errors = violation_errors(error.violations)
        if errors:
            return await _reshow(request, kind, object_id, errors=errors, status_code=400)
        if any(v.field == "id" for v in error.violations):
            return not_found_page(request)
        return await _reshow(
            request, kind, object_id, form_error=INVALID_CARD_MESSAGE, status_code=400
        )
    if error.code == grpc.StatusCode.FAILED_PRECONDITION:
        # Paid, expired or closed meanwhile (CHECKOUT_SESSION_COMPLETE,
        # CHECKOUT_SESSION_EXPIRED, …): the page as it is now says which.
        return await _reshow(
            request, kind, object_id, form_error=NOT_PAYABLE_MESSAGE, status_code=409
        )
    if error.code == grpc.StatusCode.ABORTED:
        # PAYMENT_IN_PROGRESS: another submission of this page is being charged.
        return status_page(
            request,
            status_code=409,
            outcome="pending",
            title="A payment is already in progress",
            message="Another payment for this is being processed. "
            "Wait a moment, then check whether it went through before paying again.",
            link_url=kind.url(object_id),
            link_text="Check again",
        )
    if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return status_page(
            request,
            status_code=429,
            outcome="error",
            title="Too many attempts",
            message="Wait a few minutes before trying to pay again.",
            headers={"retry-after": "60"},
        )
    return core_failure_page(request, error)


async def _reshow(
    request: Request,
    kind: PageKind,
    object_id: str,
    *,
    errors: Mapping[str, str] | None = None,
    form_error: str = "",
    status_code: int = 200,
) -> Response:
    """The page as the core has it now: the form (with `errors`, `form_error` and
    `status_code`) while it can be paid, else what became of it."""
    try:
        page = await kind.load(hosted(request).core, object_id, request_id(request))
    except CoreError as error:
        if error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            log_fields(request).update(core_code=error.code.name, reason=error.reason)
            return not_found_page(request)
        return core_failure_page(request, error)
    log_fields(request).update(page_state=STATE_NAMES.get(page.state, str(page.state)))
    if page.state == pay_pb.PAY_PAGE_STATE_PAYABLE:
        return _form_page(
            request, kind, object_id, page, errors or {}, form_error, status_code=status_code
        )
    return _settled_page(request, kind, page)


# --- pages ----------------------------------------------------------------------


def _items(page: pay_pb.PayPage) -> list[dict[str, Any]]:
    return [
        {
            "name": item.name,
            "quantity": item.quantity,
            "unit_price": format_amount(item.unit_amount, page.currency),
            "amount": format_amount(item.amount or item.quantity * item.unit_amount, page.currency),
        }
        for item in page.line_items
    ]


def due_date_text(value: str) -> str:
    """ "2026-03-05" → "March 5, 2026"; anything else as it came."""
    try:
        return format_date(date.fromisoformat(value), format="long", locale=LOCALE)
    except ValueError:
        return value


def page_context(page: pay_pb.PayPage) -> dict[str, Any]:
    return {
        "merchant_name": page.merchant_name,
        "items": _items(page),
        "total": format_amount(page.amount_total, page.currency),
        "test_mode": page.test_mode,
        "invoice_number": page.invoice_number,
        "due_date": due_date_text(page.due_date) if page.due_date else "",
    }


def _form_page(
    request: Request,
    kind: PageKind,
    object_id: str,
    page: pay_pb.PayPage,
    errors: Mapping[str, str],
    form_error: str,
    *,
    status_code: int,
) -> HTMLResponse:
    # Chrome checks form-action on the redirect that follows the POST too, so
    # the merchant's success page must be allowed by the page with the form.
    success_origin = csp_origin(web_url(page.success_url)) if web_url(page.success_url) else None
    return render(
        request,
        "pay.html",
        {
            **page_context(page),
            "action": kind.url(object_id),
            "card_hint": True,
            "cancel_url": web_url(page.cancel_url),
            "errors": {slot: errors.get(slot, "") for slot in (NUMBER, EXPIRY, CVC)},
            "form_error": form_error,
            "fields": {NUMBER: NUMBER_FIELD, EXPIRY: EXPIRY_FIELD, CVC: CVC_FIELD},
        },
        status_code=status_code,
        headers=ROBOTS_HEADERS,
        form_action=[success_origin] if success_origin else [],
    )


def _settled_page(request: Request, kind: PageKind, page: pay_pb.PayPage) -> HTMLResponse:
    """Paid (200), expired (410) or closed (410)."""
    context = page_context(page)
    merchant = page.merchant_name or "the seller"
    what = f"Invoice {page.invoice_number}" if page.invoice_number else f"This {kind.name}"
    if page.state == pay_pb.PAY_PAGE_STATE_PAID:
        return status_page(
            request,
            status_code=200,
            outcome="paid",
            title=f"{what} is paid" if kind is INVOICE else "Payment complete",
            message=f"{merchant} has received your payment of {context['total']}. Thank you!",
            link_url=web_url(page.success_url),
            link_text=f"Return to {merchant}",
            page=context,
        )
    if page.state == pay_pb.PAY_PAGE_STATE_EXPIRED:
        return status_page(
            request,
            status_code=410,
            outcome="expired",
            title=f"{what} has expired",
            message=f"It can no longer be paid. Return to {merchant} to start again.",
            link_url=web_url(page.cancel_url),
            link_text=f"Return to {merchant}",
            page=context,
        )
    return status_page(
        request,
        status_code=410,
        outcome="closed",
        title=f"{what} is closed",
        message=f"It can no longer be paid. Contact {merchant} if you have questions.",
        link_url=web_url(page.cancel_url),
        link_text=f"Return to {merchant}",
        page=context,
    )


def status_page(
    request: Request,
    *,
    status_code: int,
    outcome: str,
    title: str,
    message: str,
    link_url: str = "",
    link_text: str = "",
    page: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page without a form: paid, expired, closed, not found, in progress."""
    context: dict[str, Any] = {
        "merchant_name": "",
        "items": [],
        "total": "",
        "test_mode": False,
        **(page or {}),
        "card_hint": False,
        "outcome": outcome,
        "title": title,
        "message": message,
        "link_url": link_url,
        "link_text": link_text,
    }
    return render(
        request,
        "pay_status.html",
        context,
        status_code=status_code,
        headers={**ROBOTS_HEADERS, **(headers or {})},
    )


def not_found_page(request: Request) -> HTMLResponse:
    return status_page(
        request,
        status_code=404,
        outcome="error",
        title="Payment page not found",
        message="Check the link you were given, or ask the seller for a new one.",
    )


def valid_object_id(value: str) -> bool:
    return _OBJECT_ID.fullmatch(value) is not None


def _object_id(request: Request, kind: PageKind) -> str | None:
    object_id: str = request.path_params[kind.path_param]
    if not valid_object_id(object_id):
        return None
    log_fields(request).update({kind.path_param: object_id})
    return object_id
