"""The plugin's web server (Starlette): its page, the install entry point and
OAuth callback, the webhook endpoint, and the support actions."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from flint.sdk import FlintError, WebhookVerificationError, verify_webhook

from .plugin import InstallError, ThankYouPlugin, UnknownInstallError, UnknownOrderError

logger = logging.getLogger("thankyou_plugin")
STATE_COOKIE = "thankyou_oauth_state"


def create_app(plugin: ThankYouPlugin) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Before answering anything: catch up on what happened while we were down.
        try:
            handled = await run_in_threadpool(plugin.resync)
            logger.info("re-synced at start: %d events handled", handled)
        except FlintError as error:
            logger.warning("re-sync at start failed (%s); POST /resync to retry", error)
        yield
        plugin.close()

    def home(request: Request) -> HTMLResponse:
        installs = plugin.store.installs()
        rows = "".join(
            f"<tr><td>{escape(o.order_id)}</td><td>{escape(o.status)}</td>"
            f"<td>{o.total / 100:.2f} {escape(o.currency.upper())}</td>"
            f"<td>{'thanked ' + escape(o.customer_email) if o.thanked else ''}</td></tr>"
            for o in plugin.store.orders()
        )
        body = "<h1>Thank You Notes</h1>"
        if not installs:
            body += '<p>Not installed yet.</p><p><a class="button" href="/install">Install</a></p>'
        else:
            body += "".join(
                f"<p>Installed on {escape(i.merchant_id)} ({escape(i.environment)}).</p>"
                # A test-mode convenience; a real plugin does not create orders.
                f'<form method="post" action="/test-checkout">'
                f'<input type="hidden" name="install_id" value="{escape(i.install_id)}">'
                f"<button>Create a test checkout</button></form>"
                for i in installs
            )
            body += f"<h2>Orders</h2><table>{rows}</table>"
        return HTMLResponse(f"<!doctype html><title>Thank You Notes</title>{body}")

    def install(request: Request) -> Response:
        url, state = plugin.start_install()
        response = RedirectResponse(url, status_code=302)
        # Binds the OAuth state to this browser, so a callback started elsewhere fails.
        response.set_cookie(STATE_COOKIE, state, max_age=600, httponly=True, samesite="lax")
        return response

    def oauth_callback(request: Request) -> Response:
        params = request.query_params
        if params.get("error"):
            return PlainTextResponse(f"Not installed: {params.get('error')}", status_code=400)
        state = params.get("state", "")
        if not state or not hmac.compare_digest(state, request.cookies.get(STATE_COOKIE, "")):
            return PlainTextResponse("This install was not started here.", status_code=400)
        try:
            plugin.finish_install(params.get("code", ""), state)
        except (InstallError, FlintError) as error:
            return PlainTextResponse(f"Install failed: {error}", status_code=400)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(STATE_COOKIE)
        return response

    async def webhook(request: Request) -> Response:
        body = await request.body()  # the raw bytes: verify before parsing
        secret = plugin.webhook_secret()
        if secret is None:
            return PlainTextResponse("no endpoint yet", status_code=404)
        try:
            event = verify_webhook(body, request.headers, secret)
        except WebhookVerificationError as error:
            logger.warning("rejected delivery %s: %s", request.headers.get("webhook-id"), error)
            # A 4xx tells Flint not to retry what it cannot fix.
            return PlainTextResponse("invalid signature", status_code=400)
        try:
            outcome = await run_in_threadpool(plugin.handle_event, event, "webhook")
        except FlintError as error:
            logger.warning("%s failed, Flint will retry: %s", event.id, error)
            return PlainTextResponse("try again", status_code=503)
        return PlainTextResponse(outcome)

    async def test_checkout(request: Request) -> Response:
        form = await request.form()
        try:
            url = await run_in_threadpool(plugin.create_test_checkout, str(form["install_id"]))
        except (KeyError, UnknownInstallError):
            return PlainTextResponse("unknown install", status_code=404)
        return RedirectResponse(url, status_code=303)

    async def refund(request: Request) -> Response:
        if not _is_support(request, plugin.settings.support_token):
            return JSONResponse({"error": "support token required"}, status_code=401)
        try:  # an optional {"amount": 1000}; without it, everything refundable
            amount = int((await request.json()).get("amount", 0)) if await request.body() else 0
        except (ValueError, AttributeError, TypeError):
            return JSONResponse({"error": 'send {"amount": <minor units>} or nothing'}, 400)
        try:
            refunded = await run_in_threadpool(
                plugin.refund, request.path_params["order_id"], amount
            )
        except UnknownOrderError:
            return JSONResponse({"error": "unknown order; POST /resync first"}, status_code=404)
        except FlintError as error:
            return JSONResponse({"error": error.reason, "message": error.message}, status_code=400)
        # The refund as Flint's API shows it.
        return JSONResponse(json_format.MessageToDict(refunded, preserving_proto_field_name=True))

    async def resync(request: Request) -> Response:
        if not _is_support(request, plugin.settings.support_token):
            return JSONResponse({"error": "support token required"}, status_code=401)
        return JSONResponse({"handled": await run_in_threadpool(plugin.resync)})

    def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/install", install),
            Route("/oauth/callback", oauth_callback),
            Route("/webhooks", webhook, methods=["POST"]),
            Route("/test-checkout", test_checkout, methods=["POST"]),
            Route("/orders/{order_id}/refund", refund, methods=["POST"]),
            Route("/resync", resync, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


def _is_support(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "").removeprefix("Bearer ")
    return hmac.compare_digest(given.encode(), token.encode())
