"""The merchant's app-billing pages: confirming an app charge (GET and POST
/hosted/billing/charges/{id}) and the billing overview (GET /hosted/billing)
with every app charge, a cancel button each and the card on file.

Every page needs the merchant signed in; the core answers with the merchant's
own charges only (another merchant's id is NOT_FOUND). Every POST carries the
CSRF token; after a decision the browser returns (303) to the app's return_url."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from flint.billing.v1 import billing_service_pb2 as pb
from flint.hosted.amounts import format_amount
from flint.hosted.card_form import CVC_FIELD, EXPIRY_FIELD, NUMBER_FIELD, read_card
from flint.hosted.core import CoreError
from flint.hosted.pages import (
    core_failure_page,
    csrf_ok,
    csrf_refused,
    error_page,
    form_text,
    render,
)
from flint.hosted.security import csp_origin, web_url
from flint.hosted.sessions import MerchantSession
from flint.hosted.signin import signin_url
from flint.hosted.state import hosted, log_fields, request_id
from flint.server.convert import ENVIRONMENT_ENUMS

BILLING_PATH = "/hosted/billing"
CHARGE_PATH = "/hosted/billing/charges/{charge_id}"
CANCEL_PATH = "/hosted/billing/charges/{charge_id}/cancel"
CARD_PATH = "/hosted/billing/card"
_CHARGE_ID = re.compile(r"chg_[a-z0-9]{26}")
ENVIRONMENTS = ENVIRONMENT_ENUMS
STATUS_TEXT = {
    pb.APP_CHARGE_STATUS_PENDING: "pending",
    pb.APP_CHARGE_STATUS_ACTIVE: "active",
    pb.APP_CHARGE_STATUS_DECLINED: "declined",
    pb.APP_CHARGE_STATUS_EXPIRED: "expired",
    pb.APP_CHARGE_STATUS_FROZEN: "frozen",
    pb.APP_CHARGE_STATUS_CANCELED: "canceled",
}


def _charge_url(charge_id: str) -> str:
    return f"/hosted/billing/charges/{charge_id}"


def describe(charge: pb.AppCharge) -> dict[str, Any]:
    """What is charged, how often, trial and cap, in the merchant's words."""
    amount = format_amount(charge.amount, charge.currency)
    if charge.kind == pb.APP_CHARGE_KIND_ONE_TIME:
        what, often = amount, "once"
    elif charge.kind == pb.APP_CHARGE_KIND_RECURRING:
        what = amount
        often = "every year" if charge.interval == pb.BILLING_INTERVAL_ANNUAL else "every 30 days"
    else:
        what = "what you use"
        often = "every 30 days"
    return {
        "id": charge.id,
        "name": charge.name,
        "app_name": charge.app_name,
        "status": STATUS_TEXT.get(charge.status, ""),
        "amount": what,
        "interval": often,
        "trial_days": charge.trial_days,
        "cap": format_amount(charge.capped_amount, charge.currency) if charge.capped_amount else "",
        "new_cap": format_amount(charge.pending_capped_amount, charge.currency)
        if charge.pending_capped_amount
        else "",
        "test": charge.test,
        "cancelable": charge.status in (pb.APP_CHARGE_STATUS_PENDING, pb.APP_CHARGE_STATUS_ACTIVE),
    }


def _to_signin(request: Request, next_path: str, status_code: int) -> Response:
    return RedirectResponse(signin_url(next_path), status_code=status_code)


def _charge_id(request: Request) -> str | None:
    value = str(request.path_params["charge_id"])
    return value if _CHARGE_ID.fullmatch(value) else None


def _not_found(request: Request) -> Response:
    return error_page(
        request,
        status_code=404,
        title="Charge not found",
        message="There is no such app charge for your store.",
    )


def _refused(request: Request, error: CoreError, next_path: str, status_code: int) -> Response:
    log_fields(request).update(core_code=error.code.name, reason=error.reason)
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        response = _to_signin(request, next_path, status_code)
        hosted(request).sessions.sign_out(response)
        return response
    if error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
        return _not_found(request)
    if error.code == grpc.StatusCode.FAILED_PRECONDITION:
        return error_page(request, status_code=409, title="Not possible", message=error.message)
    return core_failure_page(request, error)


async def charge_page(request: Request) -> Response:
    charge_id = _charge_id(request)
    if charge_id is None:
        return _not_found(request)
    state = hosted(request)
    session = state.sessions.current(request)
    if session is None:
        return _to_signin(request, _charge_url(charge_id), 302)
    core = state.core
    try:
        view = await core.call(
            core.billing.GetAppChargeConfirmation,
            pb.GetAppChargeConfirmationRequest(id=charge_id),
            credential=session.token,
            request_id=request_id(request),
        )
    except CoreError as error:
        return _refused(request, error, _charge_url(charge_id), 302)
    charge = view.app_charge
    return_url = web_url(charge.return_url)
    origin = csp_origin(return_url) if return_url else None
    log_fields(request).update(app_charge_id=charge_id, state=view.state)
    return render(
        request,
        "billing_confirm.html",
        {
            "charge": describe(charge),
            "partner_name": view.partner_name,
            "merchant_name": view.merchant_name,
            "open": view.state == pb.CONFIRMATION_STATE_OPEN,
            "expired": view.state == pb.CONFIRMATION_STATE_EXPIRED,
            "cap_increase": view.cap_increase,
            "action": _charge_url(charge_id),
            "return_url": return_url,
        },
        form_action=[origin] if origin else [],
    )


async def charge_decision(request: Request) -> Response:
    charge_id = _charge_id(request)
    if charge_id is None:
        return _not_found(request)
    form = await request.form()
    if not csrf_ok(request, form):
        return csrf_refused(request)
    decision = form_text(form, "decision")
    if decision not in ("approve", "decline"):
        return error_page(
            request,
            status_code=400,
            title="Choose Approve or Decline",
            message="Go back and choose whether to approve the charge.",
        )
    state = hosted(request)
    session = state.sessions.current(request)
    if session is None:
        return _to_signin(request, _charge_url(charge_id), 303)
    core = state.core
    try:
        view = await core.call(
            core.billing.DecideAppCharge,
            pb.DecideAppChargeRequest(id=charge_id, approve=decision == "approve"),
            credential=session.token,
            request_id=request_id(request),
        )
    except CoreError as error:
        return _refused(request, error, _charge_url(charge_id), 303)
    log_fields(request).update(app_charge_id=charge_id, decision=decision)
    target = web_url(view.app_charge.return_url)
    if not target:
        return RedirectResponse(_charge_url(charge_id), status_code=303)
    separator = "&" if "?" in target else "?"
    query = urlencode({"charge_id": charge_id, "decision": decision})
    return RedirectResponse(f"{target}{separator}{query}", status_code=303)


def _environment(request: Request) -> str:
    value = request.query_params.get("environment", "test")
    return value if value in ENVIRONMENTS else "test"


def _overview_url(environment: str) -> str:
    return f"{BILLING_PATH}?{urlencode({'environment': environment})}"


async def overview(request: Request) -> Response:
    environment = _environment(request)
    state = hosted(request)
    session = state.sessions.current(request)
    if session is None:
        return _to_signin(request, _overview_url(environment), 302)
    core = state.core
    try:
        listed = await core.call(
            core.billing.ListAppCharges,
            pb.ListAppChargesRequest(environment=ENVIRONMENTS[environment], page_size=100),
            credential=session.token,
            request_id=request_id(request),
        )
        card = await core.call(
            core.billing.GetBillingCard,
            pb.GetBillingCardRequest(),
            credential=session.token,
            request_id=request_id(request),
        )
    except CoreError as error:
        return _refused(request, error, _overview_url(environment), 302)
    return render(
        request,
        "billing.html",
        {
            "environment": environment,
            "merchant_name": session.merchant_name,
            "charges": [describe(c) for c in listed.app_charges],
            "card": f"{card.brand} •••• {card.last4}" if card.last4 else "",
            "card_error": request.query_params.get("card_error", "") == "1",
            "fields": {"number": NUMBER_FIELD, "expiry": EXPIRY_FIELD, "cvc": CVC_FIELD},
        },
    )


async def _overview_post(request: Request) -> tuple[FormData, str, MerchantSession] | Response:
    """A form posted from the overview, CSRF-checked and from a signed-in
    merchant, with the overview to return to; or the response refusing it."""
    form = await request.form()
    if not csrf_ok(request, form):
        return csrf_refused(request)
    environment = form_text(form, "environment")
    back = _overview_url(environment if environment in ENVIRONMENTS else "test")
    session = hosted(request).sessions.current(request)
    if session is None:
        return _to_signin(request, back, 303)
    return form, back, session


async def cancel(request: Request) -> Response:
    charge_id = _charge_id(request)
    if charge_id is None:
        return _not_found(request)
    posted = await _overview_post(request)
    if isinstance(posted, Response):
        return posted
    _, back, session = posted
    core = hosted(request).core
    try:
        await core.call(
            core.billing.CancelAppCharge,
            pb.CancelAppChargeRequest(id=charge_id),
            credential=session.token,
            request_id=request_id(request),
        )
    except CoreError as error:
        return _refused(request, error, back, 303)
    log_fields(request).update(app_charge_id=charge_id, outcome="canceled")
    return RedirectResponse(back, status_code=303)


async def set_card(request: Request) -> Response:
    posted = await _overview_post(request)
    if isinstance(posted, Response):
        return posted
    form, back, session = posted
    card = read_card(form).card
    if card is None:
        return RedirectResponse(f"{back}&card_error=1", status_code=303)
    core = hosted(request).core
    try:
        await core.call(
            core.billing.SetBillingCard,
            pb.SetBillingCardRequest(
                number=card.number, exp_month=card.exp_month, exp_year=card.exp_year, cvc=card.cvc
            ),
            credential=session.token,
            request_id=request_id(request),
        )
    except CoreError as error:
        if error.code == grpc.StatusCode.INVALID_ARGUMENT:
            return RedirectResponse(f"{back}&card_error=1", status_code=303)
        return _refused(request, error, back, 303)
    return RedirectResponse(back, status_code=303)
