"""Browser security of the hosted pages: response headers (CSP and friends),
the `next` redirect check, the merchant URLs a payment page may link or
redirect to, the client address, and the origin a form may post to."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_NEXT = "/hosted/"
MAX_NEXT_LENGTH = 8192
STATIC_PREFIX = "/static/"
STATIC_CACHE_CONTROL = "public, max-age=3600"
NO_STORE = "no-store"


def content_security_policy(form_action: Iterable[str] = ()) -> str:
    """The one policy of every hosted response. `form_action` adds origins a form
    may post to, or be redirected to after posting (Chrome applies form-action
    to the redirect that follows a form submission)."""
    sources = " ".join(["'self'", *form_action])
    return "; ".join(
        [
            "default-src 'none'",
            "style-src 'self'",
            "img-src 'self' https: data:",
            f"form-action {sources}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


# A host in a CSP source expression: DNS names, IPv4, or bracketed IPv6; never
# anything that could end the directive (";", ",", spaces, quotes).
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")


def csp_origin(uri: str) -> str | None:
    """The CSP source for the origin of a redirect URI, or None when it cannot be
    expressed safely. Custom schemes of native apps become `scheme:`."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not _SCHEME.match(scheme):
        return None
    if scheme not in ("http", "https"):
        return f"{scheme}:"
    host = parts.netloc.rsplit("@", 1)[-1]
    if port is not None:
        host = host[: host.rfind(":")]
    if not host or not _HOST.match(host):
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def web_url(value: str) -> str:
    """`value` if it is an absolute http(s) URL a page may link or redirect to,
    else "" (no `javascript:`, no scheme-relative `//host`, no control characters
    or spaces that could split a header or an attribute)."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return ""
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value) or "\\" in value:
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return ""
    return value


def safe_next(value: str | None) -> str:
    """`value` if it is a path on this site, else the default landing page.
    Refuses everything a browser could resolve to another origin: schemes,
    `//host`, backslashes (browsers read `/\\host` as `//host`) and control
    characters."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return DEFAULT_NEXT
    if not value.startswith("/") or value.startswith("//"):
        return DEFAULT_NEXT
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return value


def client_ip(request: Request, forwarded_hops: int) -> str:
    """The browser's address, for the core's sign-in rate limits. Each trusted
    proxy appends the address it saw to X-Forwarded-For, so the entry
    `forwarded_hops` from the right is the one the outermost trusted proxy
    (Envoy) wrote; entries left of it come from the client and may be forged."""
    peer = request.client.host if request.client else ""
    header = request.headers.get("x-forwarded-for", "")
    if forwarded_hops == 0 or not header:
        return peer
    hops = [hop.strip() for hop in header.split(",") if hop.strip()]
    if len(hops) < forwarded_hops:
        return peer
    candidate = hops[-forwarded_hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


class SecurityHeadersMiddleware:
    """Sets the security headers on every response, including errors and static
    files. A handler that needs a wider form-action sets its own CSP first."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", content_security_policy())
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("cross-origin-opener-policy", "same-origin")
                if self.hsts:
                    headers.setdefault("strict-transport-security", "max-age=31536000")
                # Pages carry forms, CSRF tokens and merchant data: nothing is
                # stored unless a handler says it is public (JWKS, metadata).
                static = path.startswith(STATIC_PREFIX) and message["status"] < 400
                headers.setdefault("cache-control", STATIC_CACHE_CONTROL if static else NO_STORE)
            await send(message)

        await self.app(scope, receive, send_with_headers)
