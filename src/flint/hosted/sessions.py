"""The merchant's sign-in cookie and CSRF tokens.

The session cookie holds the core's `fms_…` token (signed, HttpOnly, never in a
page). CSRF protection is a signed double-submit token: a random per-browser
cookie, and in every form a timed token signed with the app's key whose payload
is an HMAC of that cookie and the session token. A token is therefore valid
only in the browser, and for the session, it was rendered for; signing in or
out changes the session and retires every older form.

The device cookie holds the core's `fdv_…` device token, given at a
successful sign-in and bound by the core to that merchant account: sent back
at the next sign-in, it lets this browser sign in while the account is
throttled for other addresses (OWASP's device cookie). HttpOnly, SameSite
strict (only the same-site sign-in form needs it), Secure over https.

With Secure cookies the names carry the `__Host-` prefix, so a sibling
subdomain cannot plant either cookie (cookie tossing)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE_SECONDS = 2 * 60 * 60
# As long as the core trusts an unused device (accounts.service.DEVICE_TTL).
DEVICE_MAX_AGE_SECONDS = 90 * 24 * 60 * 60
MAX_DEVICE_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class MerchantSession:
    token: str
    merchant_name: str


class Sessions:
    def __init__(self, secret_key: str, *, secure: bool) -> None:
        self._key = secret_key.encode()
        self._secure = secure
        prefix = "__Host-" if secure else ""
        self.session_cookie = f"{prefix}flint_session"
        self.csrf_cookie = f"{prefix}flint_csrf"
        self.device_cookie = f"{prefix}flint_device"
        self._session_serializer = URLSafeSerializer(secret_key, salt="flint.hosted.session")
        self._csrf_serializer = URLSafeTimedSerializer(secret_key, salt="flint.hosted.csrf")

    # --- session cookie ---------------------------------------------------------

    def current(self, request: Request) -> MerchantSession | None:
        raw = request.cookies.get(self.session_cookie)
        if not raw:
            return None
        try:
            data: Any = self._session_serializer.loads(raw)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        token, name = data.get("t"), data.get("n", "")
        if not isinstance(token, str) or not token or not isinstance(name, str):
            return None
        return MerchantSession(token, name)

    def sign_in(self, response: Response, session: MerchantSession, expires: datetime) -> None:
        value = self._session_serializer.dumps({"t": session.token, "n": session.merchant_name})
        max_age = int((expires - datetime.now(UTC)).total_seconds())
        self._set(response, self.session_cookie, value, max_age=max_age if max_age > 0 else None)

    def sign_out(self, response: Response) -> None:
        response.delete_cookie(
            self.session_cookie, path="/", secure=self._secure, httponly=True, samesite="lax"
        )

    # --- device cookie ----------------------------------------------------------

    def device_token(self, request: Request) -> str:
        """The device token this browser holds, "" for none. The core checks it
        (hash, account, expiry): the cookie itself needs no signature."""
        token = request.cookies.get(self.device_cookie, "")
        return token if 0 < len(token) <= MAX_DEVICE_TOKEN_LENGTH else ""

    def remember_device(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.device_cookie,
            token,
            max_age=DEVICE_MAX_AGE_SECONDS,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )

    # --- CSRF -------------------------------------------------------------------

    def csrf_token(self, request: Request, response_cookies: dict[str, str]) -> str:
        """A token for a form on the page being rendered. When the browser has no
        CSRF cookie yet, a new one is put in `response_cookies` to be set."""
        browser = request.cookies.get(self.csrf_cookie) or response_cookies.get(self.csrf_cookie)
        if not browser:
            browser = secrets.token_urlsafe(32)
            response_cookies[self.csrf_cookie] = browser
        return self._csrf_serializer.dumps(self._binding(browser, self._session_token(request)))

    def csrf_valid(self, request: Request, token: str) -> bool:
        browser = request.cookies.get(self.csrf_cookie)
        if not browser or not token:
            return False
        try:
            payload: Any = self._csrf_serializer.loads(token, max_age=CSRF_MAX_AGE_SECONDS)
        except BadSignature:  # also SignatureExpired
            return False
        expected = self._binding(browser, self._session_token(request))
        return isinstance(payload, str) and hmac.compare_digest(payload, expected)

    def set_cookies(self, response: Response, cookies: dict[str, str]) -> None:
        for name, value in cookies.items():
            self._set(response, name, value, max_age=None)

    # --- helpers ----------------------------------------------------------------

    def _session_token(self, request: Request) -> str:
        session = self.current(request)
        return session.token if session else ""

    def _binding(self, browser: str, session_token: str) -> str:
        # Keyed, so the page reveals nothing about the session token.
        message = f"{browser}\x00{session_token}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _set(self, response: Response, name: str, value: str, *, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )
