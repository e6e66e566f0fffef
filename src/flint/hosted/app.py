"""The hosted web app: the browser side of the OAuth install flow, the
standard OAuth endpoints and the buyer's payment pages (checkout, payment
link, invoice), as a Starlette app behind Envoy that calls the core over gRPC.

    create_app(settings) -> Starlette   the ASGI app (tests, other servers)
    run(settings, host=..., port=...)   serves it with uvicorn until SIGINT/SIGTERM
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flint.common import logs
from flint.common.logs import log_event
from flint.common.ratelimit import Limiter, limiter_from_env
from flint.hosted import authorize, billing, oauth_api, pay, payment_links, signin
from flint.hosted.core import Core
from flint.hosted.pages import template_environment
from flint.hosted.ratelimit import AddressLimits, AddressRateLimitMiddleware
from flint.hosted.security import SecurityHeadersMiddleware
from flint.hosted.sessions import Sessions
from flint.hosted.settings import SECRET_ENV, HostedSettings, SettingsError
from flint.hosted.state import LOG_FIELDS_KEY, Hosted

logger = logging.getLogger("flint.hosted")

STATIC_DIR = Path(__file__).parent / "static"
# Forms and token requests are small; anything larger is refused with 413.
MAX_BODY_BYTES = 64 * 1024
GRACEFUL_SHUTDOWN_SECONDS = 10


class RequestLogMiddleware:
    """One structured line per request: method, path (never the query, which may
    carry state or codes), status, duration, and what handlers added."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        fields: dict[str, Any] = {}
        scope[LOG_FIELDS_KEY] = fields

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            headers = dict(scope.get("headers", ()))
            log_event(
                logger,
                "http_request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                request_id=headers.get(b"x-request-id", b"").decode("latin-1")[:128],
                **{key: value for key, value in fields.items() if value not in ("", None)},
            )


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def routes() -> list[BaseRoute]:
    return [
        Route("/hosted/healthz", healthz, methods=["GET"]),
        Route("/hosted/", signin.account_page, methods=["GET"]),
        Route(signin.SIGNIN_PATH, signin.signin_page, methods=["GET"]),
        Route(signin.SIGNIN_PATH, signin.signin, methods=["POST"]),
        Route("/hosted/signout", signin.signout, methods=["POST"]),
        Route(authorize.AUTHORIZE_PATH, authorize.authorize_page, methods=["GET"]),
        Route(authorize.AUTHORIZE_PATH, authorize.authorize_decision, methods=["POST"]),
        Route(pay.CHECKOUT_PATH, pay.checkout_page, methods=["GET"]),
        Route(pay.CHECKOUT_PATH, pay.checkout_pay, methods=["POST"]),
        Route(pay.INVOICE_PATH, pay.invoice_page, methods=["GET"]),
        Route(pay.INVOICE_PATH, pay.invoice_pay, methods=["POST"]),
        Route(billing.BILLING_PATH, billing.overview, methods=["GET"]),
        Route(billing.CARD_PATH, billing.set_card, methods=["POST"]),
        Route(billing.CHARGE_PATH, billing.charge_page, methods=["GET"]),
        Route(billing.CHARGE_PATH, billing.charge_decision, methods=["POST"]),
        Route(billing.CANCEL_PATH, billing.cancel, methods=["POST"]),
        Route(payment_links.PAYMENT_LINK_PATH, payment_links.payment_link_page, methods=["GET"]),
        Route(payment_links.PAYMENT_LINK_PATH, payment_links.open_payment_link, methods=["POST"]),
        Route("/oauth/token", oauth_api.token, methods=["POST"]),
        Route("/oauth/revoke", oauth_api.revoke, methods=["POST"]),
        Route("/oauth/introspect", oauth_api.introspect, methods=["POST"]),
        Route("/.well-known/jwks.json", oauth_api.jwks, methods=["GET"]),
        Route(
            "/.well-known/oauth-authorization-server",
            oauth_api.metadata,
            methods=["GET"],
        ),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_app(
    settings: HostedSettings,
    *,
    address_limits: AddressLimits | None = None,
    limiter: Limiter | None = None,
) -> Starlette:
    secret_key = settings.secret_key
    if secret_key is None:
        secret_key = secrets.token_urlsafe(32)
        log_event(
            logger,
            "hosted_secret_generated",
            level=logging.WARNING,
            hint=f"sessions and forms will not survive a restart or work across replicas; "
            f"set {SECRET_ENV}",
        )
    state = Hosted(
        settings=settings,
        sessions=Sessions(secret_key, secure=settings.cookies_secure),
        templates=template_environment(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.core_client = Core(
            settings.grpc_target,
            internal_key=settings.internal_key,
            timeout=settings.rpc_timeout_seconds,
        )
        log_event(
            logger,
            "hosted_started",
            grpc_target=settings.grpc_target,
            issuer=settings.issuer,
            secure_cookies=settings.cookies_secure,
        )
        try:
            yield
        finally:
            client, state.core_client = state.core_client, None
            await client.close()

    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(RequestLogMiddleware),
            Middleware(SecurityHeadersMiddleware, hsts=settings.public_url.startswith("https://")),
            # Inside the two above (not Starlette's `max_body_size`, which sits outside
            # every middleware), so a 413 has the security headers and is logged as 413.
            Middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY_BYTES),
            # Anonymous pages, per browser address (see hosted/ratelimit.py).
            Middleware(
                AddressRateLimitMiddleware,
                limiter=limiter or limiter_from_env(),
                limits=address_limits or AddressLimits.from_env(),
            ),
        ],
        lifespan=lifespan,
    )
    app.state.hosted = state
    return app


def run(settings: HostedSettings, *, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Serves the app until SIGINT or SIGTERM, then stops taking connections,
    lets in-flight requests finish (up to 10 s) and closes the core channel."""
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        # Flint reads X-Forwarded-For itself (see security.client_ip).
        proxy_headers=False,
        server_header=False,
        access_log=False,  # RequestLogMiddleware writes one line per request
        log_config=None,  # keep the root handler from flint.common.logs
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )
    _QuietServer(config).run()


class _QuietServer(uvicorn.Server):
    """Uvicorn re-raises the stop signal after its graceful shutdown, which ends
    the process with -15, or a KeyboardInterrupt traceback when Ctrl-C reaches
    every process of a terminal at once. Flint's processes exit 0 once stopped."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flint.hosted",
        description="Flint's hosted web app. Secrets come from the environment: "
        "FLINT_INTERNAL_KEY (required) and FLINT_HOSTED_SECRET (required with several replicas).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--grpc-target", default="127.0.0.1:50051")
    parser.add_argument(
        "--public-url",
        help="the address browsers use (Envoy); default $FLINT_PUBLIC_URL or http://127.0.0.1:8080",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        settings = HostedSettings.from_env(grpc_target=args.grpc_target, public_url=args.public_url)
    except SettingsError as error:
        log_event(logger, "hosted_misconfigured", level=logging.ERROR, problem=str(error))
        return 2
    run(settings, host=args.host, port=args.port)
    return 0
