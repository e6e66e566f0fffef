"""Per-address request limits on the hosted pages anyone can reach without a
credential: pay pages (/pay/, /i/), payment links (/l/), sign-in and the OAuth
endpoints. The API's per-credential limits (server/ratelimit.py) cannot cover
them: the hosted app calls the core with its internal key for every browser.

The address is the browser's as Envoy saw it: Envoy appends the peer address to
X-Forwarded-For (`use_remote_address`), and that entry is believed only when the
request came from Envoy, i.e. from a trusted proxy address (loopback by
default: Envoy and the hosted app share a host). A client that reaches the app
directly is limited by its own peer address, whatever header it sends. IPv6
clients are counted per /64, the block one subscriber usually holds.

The limiter is the API's (common/ratelimit.py): in this process, or the shared
Redis when FLINT_RATE_LIMIT_URL is set.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from flint.common.ratelimit import Decision, Limit, Limiter, header_seconds
from flint.hosted.authorize import AUTHORIZE_PATH
from flint.hosted.oauth_errors import error_description
from flint.hosted.pages import error_page
from flint.hosted.security import client_ip
from flint.hosted.signin import SIGNIN_PATH
from flint.hosted.state import hosted, log_fields

PER_SECOND_ENV = "FLINT_HOSTED_RATE_LIMIT_PER_SECOND"
DEFAULT_PER_SECOND = 10
# A page view can bring a few requests at once (a form post and its redirect).
BURST_SECONDS = 3
LIMITED_PREFIXES = ("/pay/", "/i/", "/l/", "/oauth/", SIGNIN_PATH)
TRUSTED_PROXIES = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class AddressLimits:
    per_second: int = DEFAULT_PER_SECOND

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AddressLimits:
        env = os.environ if environ is None else environ
        raw = env.get(PER_SECOND_ENV, "")
        value = int(raw) if raw else DEFAULT_PER_SECOND
        if value < 1:
            raise ValueError(f"{PER_SECOND_ENV} must be 1 or more, not {raw!r}")
        return cls(value)

    @property
    def limit(self) -> Limit:
        return Limit(per_second=self.per_second, burst=self.per_second * BURST_SECONDS)


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in TRUSTED_PROXIES)


def caller_address(request: Request, forwarded_hops: int) -> str:
    """The address a limit is counted against (see the module doc)."""
    peer = request.client.host if request.client else ""
    address = client_ip(request, forwarded_hops) if _trusted(peer) else peer
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def limited(path: str) -> bool:
    return path.startswith(LIMITED_PREFIXES)


class AddressRateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limiter: Limiter, limits: AddressLimits) -> None:
        self.app = app
        self.limiter = limiter
        self.limit = limits.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not limited(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        address = caller_address(request, hosted(request).settings.forwarded_hops)
        # A shared store is a network call: off the event loop.
        decision = await run_in_threadpool(self.limiter.check, f"ip:{address}", self.limit)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        log_fields(request).update(reason="RATE_LIMITED")
        await too_many_requests(request, decision)(scope, receive, send)


def too_many_requests(request: Request, decision: Decision) -> Response:
    retry_after = header_seconds(decision.retry_after_seconds)
    headers = {
        "retry-after": str(retry_after),
        "ratelimit-limit": str(decision.limit.burst),
        "ratelimit-remaining": "0",
        "ratelimit-reset": str(header_seconds(decision.reset_seconds)),
    }
    message = f"Too many requests from your address. Please try again in {retry_after} s."
    path = request.url.path
    if path.startswith("/oauth/") and path != AUTHORIZE_PATH:
        # Token, revoke and introspect answer machines in RFC 6749's JSON shape;
        # "temporarily_unavailable" is the standard code for "try again later".
        body = {
            "error": "temporarily_unavailable",
            "error_description": error_description(message),
            "reason": "RATE_LIMITED",
        }
        return Response(
            json.dumps(body),
            status_code=429,
            media_type="application/json",
            headers={**headers, "cache-control": "no-store"},
        )
    return error_page(
        request, status_code=429, title="Too many requests", message=message, headers=headers
    )
