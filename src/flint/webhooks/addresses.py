"""Where deliveries may go. A webhook URL is chosen by a partner, so without
these checks it could make Flint call its own network (SSRF): a private
address, the loopback interface or a cloud metadata service. The URL is checked
when it is saved and, because DNS can change, the resolved address is checked
again at every delivery, and the connection goes to that checked address."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from flint.common.validation import MAX_URL_LENGTH

ALLOW_LOOPBACK_ENV = "FLINT_WEBHOOKS_ALLOW_LOOPBACK"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


def loopback_allowed_by_env() -> bool:
    """The development setting: local receivers on http://127.0.0.1 (tests, `flint up`)."""
    return os.environ.get(ALLOW_LOOPBACK_ENV, "") == "1"


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_problem(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why a delivery must not go to `address`, or None. Only globally routable
    unicast addresses pass (plus loopback in development); that refuses private
    ranges (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 with
    the metadata services, fe80::/10), shared (100.64/10), reserved and
    unspecified addresses."""
    address = _unmapped(address)
    if address.is_loopback:
        return None if allow_loopback else "is a loopback address"
    if address.is_link_local:
        return "is a link-local or metadata address"
    if address.is_multicast or address.is_unspecified or not address.is_global:
        return "is not a public address"
    return None


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class UrlCheck:
    reason: str
    description: str


def url_problem(url: str, *, live: bool, allow_loopback: bool) -> UrlCheck | None:
    """Why `url` cannot be a webhook endpoint, or None. Live endpoints need
    https; test-only ones may use http. A host that is an address literal (or
    `localhost`) is checked here; host names are checked when resolved."""
    if not url:
        return UrlCheck("FIELD_REQUIRED", "is required")
    if len(url) > MAX_URL_LENGTH:
        return UrlCheck("FIELD_TOO_LONG", f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() for ch in url):
        return UrlCheck("INVALID_URL", "must not contain whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError:
        return UrlCheck("INVALID_URL", "is not a valid URL")
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return UrlCheck("INVALID_URL", "must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        return UrlCheck("INVALID_URL", "must not contain credentials")
    if parts.fragment or url.endswith("#"):
        return UrlCheck("INVALID_URL", "must not contain a fragment")
    host = parts.hostname.rstrip(".").lower()
    literal = _literal_address(host)
    loopback = host in LOOPBACK_NAMES or (literal is not None and _unmapped(literal).is_loopback)
    if loopback and not allow_loopback:
        return UrlCheck("ADDRESS_NOT_ALLOWED", "must not point at a loopback address")
    if literal is not None and not loopback:
        problem = address_problem(literal, allow_loopback=allow_loopback)
        if problem:
            return UrlCheck("ADDRESS_NOT_ALLOWED", f"must not point at an address that {problem}")
    if parts.scheme == "http" and live and not loopback:
        return UrlCheck("INSECURE_URL", "must use https:// for live events")
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressRefused(Exception):  # noqa: N818 - reads as the outcome it names
    """The endpoint resolves to an address deliveries must not go to."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the checked address, and the host name that
    the Host header and TLS (SNI, certificate check) still use."""

    url: str
    host_header: str
    sni_hostname: str | None


def resolve_target(url: str, *, allow_loopback: bool, resolver: Resolver) -> Target:
    """Resolves the endpoint's host and checks every address it has (one bad
    address is enough to refuse: an attacker controls which one is used)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _literal_address(host)
    if literal is not None:
        addresses: Sequence[str] = [str(literal)]
    else:
        try:
            addresses = resolver(host, port)
        except OSError as error:
            raise AddressRefused(f"could not resolve {host}: {error}") from None
        if not addresses:
            raise AddressRefused(f"{host} has no address")
    checked: list[IPAddress] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem:
            raise AddressRefused(f"{host} resolves to {address}, which {problem}")
        checked.append(address)
    chosen = checked[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    if parts.port is not None:
        netloc += f":{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    target_url = parts._replace(netloc=netloc).geturl()
    sni = host if parts.scheme == "https" and literal is None else None
    return Target(target_url, host_header, sni)
