"""Settings of the hosted web app, from flags and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

INTERNAL_KEY_ENV = "FLINT_INTERNAL_KEY"
SECRET_ENV = "FLINT_HOSTED_SECRET"  # noqa: S105 - the name of a variable
# Shared with the core, which signs tokens with this issuer.
PUBLIC_URL_ENV = "FLINT_PUBLIC_URL"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class HostedSettings:
    # The gRPC server, e.g. "127.0.0.1:50051".
    grpc_target: str
    # The `fik_…` key for calls made on nobody's behalf (sign-in, token endpoint).
    internal_key: str = field(repr=False)
    # The address browsers and OAuth clients use (Envoy), e.g. "http://127.0.0.1:8080".
    # It is the OAuth issuer and the base of every advertised endpoint.
    public_url: str
    # Signs CSRF tokens and the session cookie. None: a random key per process,
    # which is fine for one replica only (see `FLINT_HOSTED_SECRET`).
    secret_key: str | None = field(default=None, repr=False)
    # None: Secure cookies unless the public URL's host is a loopback name.
    secure_cookies: bool | None = None
    # Proxies in front of this app that append the client's address to
    # X-Forwarded-For (Envoy: 1). 0 ignores the header and uses the peer address.
    forwarded_hops: int = 1
    # Deadline of each call to the core.
    rpc_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.grpc_target:
            raise SettingsError("grpc_target is required, e.g. 127.0.0.1:50051")
        if not self.internal_key:
            raise SettingsError(f"the internal key is required: set {INTERNAL_KEY_ENV}=fik_…")
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                f"public_url must be an absolute http(s) URL, not {self.public_url!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            # Envoy forwards fixed prefixes (/oauth/, /hosted/, …) from the root,
            # and RFC 8414 places the metadata document at the issuer's root.
            raise SettingsError(f"public_url must have no path, query or fragment: {parts.path}")
        if self.forwarded_hops < 0:
            raise SettingsError("forwarded_hops must be 0 or more")
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise SettingsError(f"{SECRET_ENV} must be at least 32 characters")

    @property
    def issuer(self) -> str:
        """The OAuth issuer: the public URL without a trailing slash."""
        return self.public_url.rstrip("/")

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        return urlsplit(self.public_url).hostname not in LOCAL_HOSTS

    @classmethod
    def from_env(
        cls,
        *,
        grpc_target: str,
        public_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        secure_cookies: bool | None = None,
    ) -> HostedSettings:
        """Flags give the addresses; secrets come from the environment only, so
        they never show in `ps` output. Without `public_url`, FLINT_PUBLIC_URL
        (the core's issuer) is used."""
        env = os.environ if environ is None else environ
        return cls(
            grpc_target=grpc_target,
            internal_key=env.get(INTERNAL_KEY_ENV, ""),
            public_url=public_url or env.get(PUBLIC_URL_ENV) or DEFAULT_PUBLIC_URL,
            secret_key=env.get(SECRET_ENV) or None,
            secure_cookies=secure_cookies,
        )
