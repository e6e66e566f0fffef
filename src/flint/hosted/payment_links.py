"""GET /l/{payment_link_id}: a visit to a payment link opens a fresh order and
checkout session (OpenPaymentLink) and sends the buyer to its page.

A GET that creates objects is unusual, but a payment link is a plain URL that
merchants paste into emails, chats and QR codes, so the visit itself is the
only signal. What keeps machines from opening checkouts nobody asked for,
as far as it reasonably can (an unknown robot still opens one; an unpaid
session simply expires):

- Nothing is cached: `Cache-Control: no-store` on every answer, so neither a
  browser nor a proxy replays one buyer's session for another.
- Browser prefetch and prerender (`Sec-Purpose: prefetch…`, the older
  `Purpose: prefetch`, `X-Moz: prefetch`, Safari's `X-Purpose: preview`) are
  declined with 503, which browsers drop; the real click then opens a session.
- HEAD (link checkers) answers 200 without opening anything.
- Well-known link-preview robots (chat and social unfurlers, search crawlers),
  recognised by their User-Agent, get a short page that opens nothing.
"""

from __future__ import annotations

import re

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from flint.commerce.v1 import pay_service_pb2 as pay_pb
from flint.hosted.core import CoreError
from flint.hosted.pages import LIVE_PAYMENTS_NOT_CONFIGURED, core_failure_page
from flint.hosted.pay import (
    CHECKOUT,
    ROBOTS_HEADERS,
    not_found_page,
    status_page,
    valid_object_id,
)
from flint.hosted.state import hosted, log_fields, request_id

PAYMENT_LINK_PATH = "/l/{payment_link_id}"
NO_STORE_HEADERS = {"cache-control": "no-store", **ROBOTS_HEADERS}

# User-Agent tokens of robots that fetch links to preview or index them.
_PREVIEW_ROBOTS = re.compile(
    r"Slackbot|Slack-ImgProxy|facebookexternalhit|Facebot|meta-externalagent|Twitterbot"
    r"|WhatsApp|TelegramBot|Discordbot|LinkedInBot|SkypeUriPreview|MicrosoftPreview"
    r"|Microsoft Office|redditbot|Pinterest|Embedly|Iframely|vkShare|Mastodon|Bluesky"
    r"|Googlebot|Google-InspectionTool|bingbot|Applebot|DuckDuckBot|YandexBot|Baiduspider",
    re.IGNORECASE,
)


def is_speculative(request: Request) -> bool:
    """A browser fetching ahead of a click that may never come."""
    headers = request.headers
    if "prefetch" in headers.get("sec-purpose", "").lower():
        return True
    if headers.get("purpose", "").lower() == "prefetch":
        return True
    if headers.get("x-moz", "").lower() == "prefetch":
        return True
    return headers.get("x-purpose", "").lower() == "preview"


def is_preview_robot(request: Request) -> bool:
    return _PREVIEW_ROBOTS.search(request.headers.get("user-agent", "")) is not None


async def open_payment_link(request: Request) -> Response:
    link_id: str = request.path_params["payment_link_id"]
    if not valid_object_id(link_id):
        return not_found_page(request)
    fields = log_fields(request)
    fields.update(payment_link_id=link_id)
    if request.method == "HEAD":
        fields.update(reason="HEAD_OPENS_NOTHING")
        return Response(status_code=200, media_type="text/html", headers=NO_STORE_HEADERS)
    if is_speculative(request):
        fields.update(reason="PREFETCH_DECLINED")
        return Response(
            "Open this link to pay.",
            status_code=503,
            media_type="text/plain",
            headers=NO_STORE_HEADERS,
        )
    if is_preview_robot(request):
        fields.update(reason="PREVIEW_ROBOT")
        return status_page(
            request,
            status_code=200,
            outcome="preview",
            title="Pay securely with Flint",
            message="Open this link in a browser to pay.",
            headers=NO_STORE_HEADERS,
        )
    try:
        page = await hosted(request).core.internal(
            hosted(request).core.pay.OpenPaymentLink,
            pay_pb.OpenPaymentLinkRequest(id=link_id),
            request_id=request_id(request),
        )
    except CoreError as error:
        fields.update(core_code=error.code.name, reason=error.reason)
        if error.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return not_found_page(request)
        if error.reason == LIVE_PAYMENTS_NOT_CONFIGURED:
            return core_failure_page(request, error)
        if error.code == grpc.StatusCode.FAILED_PRECONDITION:
            # PAYMENT_LINK_INACTIVE
            return _inactive_page(request)
        return core_failure_page(request, error)
    if page.state != pay_pb.PAY_PAGE_STATE_PAYABLE or not valid_object_id(page.id):
        return _inactive_page(request)
    fields.update(checkout_session_id=page.id)
    return RedirectResponse(CHECKOUT.url(page.id), status_code=303, headers=NO_STORE_HEADERS)


def _inactive_page(request: Request) -> Response:
    return status_page(
        request,
        status_code=410,
        outcome="closed",
        title="This link is no longer active",
        message="The seller has turned off this payment link. Ask them for a new one.",
        headers=NO_STORE_HEADERS,
    )
