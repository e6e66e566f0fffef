"""OAuth 2.0 for apps: the authorize URL (state and S256 PKCE), the code
exchange, refresh (automatic, shortly before expiry) and revocation.

Written on httpx alone, so an app needs no OAuth library at runtime; Flint's
endpoints are plain RFC 6749 / 7009 / 7636 / 8414 and any client library works too.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx

from flint.sdk.errors import APIConnectionError, FlintError, oauth_error_from_response

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


class AuthorizationRequest(NamedTuple):
    """The URL to send the merchant's browser to, and what to keep until the
    callback: check `state`, then pass `code_verifier` to `exchange_code`."""

    url: str
    state: str
    code_verifier: str


@dataclass(frozen=True)
class Tokens:
    """Tokens of one install in one environment, as the token endpoint gave them.

    `expires_at` is a Unix timestamp. Persist the whole object (see `to_dict`):
    refresh tokens rotate, and presenting an old one revokes the install's tokens.
    """

    access_token: str
    refresh_token: str
    expires_at: float
    token_type: str = "Bearer"  # noqa: S105 - the token type, not a secret
    scope: str = ""
    install_id: str = ""
    merchant_id: str = ""
    environment: str = ""

    @classmethod
    def from_token_response(cls, body: Mapping[str, Any], now: float | None = None) -> Tokens:
        issued = time.time() if now is None else now
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body.get("refresh_token", "")),
            expires_at=issued + float(body.get("expires_in", 3600)),
            token_type=str(body.get("token_type", "Bearer")),
            scope=str(body.get("scope", "")),
            install_id=str(body.get("install_id", "")),
            merchant_id=str(body.get("merchant_id", "")),
            environment=str(body.get("environment", "")),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokens:
        """The inverse of `to_dict`."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    def __repr__(self) -> str:
        return (
            f"Tokens(install_id={self.install_id!r}, environment={self.environment!r}, "
            f"scope={self.scope!r}, expires_at={self.expires_at:.0f})"
        )


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (RFC 7636, 64 characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def authorization_url(
    client_id: str,
    redirect_uri: str,
    scope: str | list[str] | tuple[str, ...],
    environment: str = "test",
    state: str | None = None,
    *,
    base_url: str = DEFAULT_BASE_URL,
    authorization_endpoint: str | None = None,
) -> AuthorizationRequest:
    """Builds the URL of Flint's hosted approval with a fresh `state` (unless
    given) and an S256 PKCE challenge. Unpacks as `(url, state, code_verifier)`."""
    verifier, challenge = pkce_pair()
    state = state or secrets.token_urlsafe(24)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope if isinstance(scope, str) else " ".join(scope),
        "state": state,
        "environment": environment,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    endpoint = authorization_endpoint or f"{base_url.rstrip('/')}/oauth/authorize"
    return AuthorizationRequest(f"{endpoint}?{urlencode(query)}", state, verifier)


class OAuthClient:
    """An app's OAuth client (`client_id` `ca_…`, `client_secret` `fcs_…`).

    Endpoints default to `<base_url>/oauth/…`; `OAuthClient.discover` reads them
    from `/.well-known/oauth-authorization-server` instead. A public client
    (no secret) authenticates with PKCE alone.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        redirect_uri: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        metadata: Mapping[str, Any] | None = None,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        root = base_url.rstrip("/")
        meta = dict(metadata or {})
        self.authorization_endpoint = str(
            meta.get("authorization_endpoint", f"{root}/oauth/authorize")
        )
        self.token_endpoint = str(meta.get("token_endpoint", f"{root}/oauth/token"))
        self.revocation_endpoint = str(meta.get("revocation_endpoint", f"{root}/oauth/revoke"))
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout, follow_redirects=False)

    @classmethod
    def discover(
        cls,
        client_id: str,
        client_secret: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        redirect_uri: str | None = None,
        http: httpx.Client | None = None,
    ) -> OAuthClient:
        """Reads the endpoints from RFC 8414 server metadata."""
        client = http or httpx.Client(timeout=30.0)
        url = f"{base_url.rstrip('/')}/.well-known/oauth-authorization-server"
        try:
            response = client.get(url)
        except httpx.HTTPError as error:
            raise APIConnectionError(f"GET {url} failed: {error}") from error
        finally:
            if http is None:
                client.close()
        # Every SDK error is a FlintError, this one too.
        if response.status_code != 200:
            raise FlintError(
                f"GET {url} answered {response.status_code}: not a Flint authorization server?",
                status=response.status_code,
                request_id=response.headers.get("x-request-id", ""),
            )
        try:
            metadata = response.json()
        except ValueError as error:
            raise FlintError(
                f"GET {url} did not answer JSON server metadata", status=response.status_code
            ) from error
        return cls(
            client_id,
            client_secret,
            redirect_uri=redirect_uri,
            base_url=base_url,
            metadata=metadata,
            http=http,
        )

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> OAuthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorization_url(
        self,
        scope: str | list[str] | tuple[str, ...],
        environment: str = "test",
        state: str | None = None,
        redirect_uri: str | None = None,
    ) -> AuthorizationRequest:
        """See the module function `authorization_url`."""
        return authorization_url(
            self.client_id,
            self._redirect_uri(redirect_uri),
            scope,
            environment,
            state,
            authorization_endpoint=self.authorization_endpoint,
        )

    def _redirect_uri(self, redirect_uri: str | None) -> str:
        uri = redirect_uri or self.redirect_uri
        if not uri:
            raise ValueError("redirect_uri is needed (pass it here or to OAuthClient)")
        return uri

    def _post(self, url: str, form: dict[str, str]) -> httpx.Response:
        try:
            # Never retried after sending: a refresh token works once, and a
            # replayed one revokes the whole family.
            if self.client_secret:
                auth = httpx.BasicAuth(self.client_id, self.client_secret)
                response = self._http.post(url, data=form, auth=auth)
            else:
                response = self._http.post(url, data={**form, "client_id": self.client_id})
        except httpx.TransportError as error:
            raise APIConnectionError(f"POST {url} failed: {error}") from error
        if not response.is_success:
            raise oauth_error_from_response(response)
        return response

    def exchange_code(
        self, code: str, code_verifier: str, redirect_uri: str | None = None
    ) -> Tokens:
        """Exchanges the authorization code from the callback for tokens."""
        response = self._post(
            self.token_endpoint,
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": code_verifier,
                "redirect_uri": self._redirect_uri(redirect_uri),
            },
        )
        return Tokens.from_token_response(response.json())

    def refresh(self, refresh_token: str) -> Tokens:
        """Trades a refresh token for new tokens (the old refresh token is spent)."""
        response = self._post(
            self.token_endpoint, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        return Tokens.from_token_response(response.json())

    def revoke(self, token: str, token_type_hint: str | None = None) -> None:
        """Revokes a token and its whole family (RFC 7009)."""
        form = {"token": token}
        if token_type_hint:
            form["token_type_hint"] = token_type_hint
        self._post(self.revocation_endpoint, form)


class OAuthSession:
    """The tokens of one install, kept fresh: the access token is refreshed
    `refresh_margin` seconds before it expires (and once on a 401
    `CREDENTIAL_EXPIRED`). Every new set of tokens goes to `on_tokens`, so the
    app can persist the rotated refresh token. Thread-safe."""

    def __init__(
        self,
        client: OAuthClient,
        tokens: Tokens,
        *,
        on_tokens: Callable[[Tokens], None] | None = None,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._tokens = tokens
        self.on_tokens = on_tokens
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        # The access token each thread last sent: a 401 refreshes only if it is
        # still the current one (another thread may have refreshed meanwhile).
        self._sent = threading.local()

    @property
    def tokens(self) -> Tokens:
        return self._tokens

    @tokens.setter
    def tokens(self, tokens: Tokens) -> None:
        with self._lock:
            self._tokens = tokens

    def expire_now(self) -> None:
        """Marks the access token expired, so the next call refreshes it."""
        self.tokens = replace(self._tokens, expires_at=0.0)

    def _refresh_locked(self, stale_access_token: str) -> Tokens:
        # Another thread may have refreshed while this one waited for the lock.
        if self._tokens.access_token != stale_access_token:
            return self._tokens
        if not self._tokens.refresh_token:
            raise FlintError("The access token expired and there is no refresh token", status=401)
        self._tokens = self.client.refresh(self._tokens.refresh_token)
        if self.on_tokens is not None:
            self.on_tokens(self._tokens)
        return self._tokens

    def refresh(self) -> Tokens:
        """Refreshes now, whatever the expiry."""
        with self._lock:
            return self._refresh_locked(self._tokens.access_token)

    def access_token(self) -> str:
        """A valid access token, refreshed first if it expires within the margin."""
        tokens = self._tokens
        if tokens.expires_at - self.refresh_margin > self._clock():
            return tokens.access_token
        with self._lock:
            return self._refresh_locked(tokens.access_token).access_token

    def revoke(self) -> None:
        """Revokes the install's tokens (the refresh token's family)."""
        tokens = self._tokens
        if tokens.refresh_token:
            self.client.revoke(tokens.refresh_token, "refresh_token")
        else:
            self.client.revoke(tokens.access_token, "access_token")

    # Credentials protocol, for FlintClient.
    def authorization(self) -> str:
        token = self.access_token()
        self._sent.token = token
        return f"Bearer {token}"

    def recover(self, error: FlintError) -> bool:
        if error.reason != "CREDENTIAL_EXPIRED":
            return False
        stale = getattr(self._sent, "token", None) or self._tokens.access_token
        with self._lock:
            self._refresh_locked(stale)
        return True
