"""Where deliveries may go. A webhook URL is chosen by a partner, so without
these checks it could make Flint call its own network (SSRF): a private
address, the loopback interface (where Envoy's admin port answers
`/config_dump` and `/reset_counters`), or a cloud metadata service, and read
the answer back through the attempts API. The URL is checked when it is saved
and, because DNS can change, the resolved address is checked again at every
delivery, and the connection goes to that checked address.

Only globally routable unicast addresses pass. IPv6 forms that carry an IPv4
address a gateway would reach (IPv4-mapped, IPv4-compatible, NAT64, 6to4)
are refused or checked as that IPv4 address: Python counts NAT64 and 6to4 as
global, so they are named here.

The development switch (`FLINT_WEBHOOKS_ALLOW_LOOPBACK=1`, set by `flint dev`)
lets endpoints that receive only test events use loopback receivers, but
never Flint's own ports on them: those are passed in by the supervisor
(`FLINT_WEBHOOKS_REFUSED_PORTS`) on top of the default ports."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from flint.common.validation import MAX_URL_LENGTH

ALLOW_LOOPBACK_ENV = "FLINT_WEBHOOKS_ALLOW_LOOPBACK"
REFUSED_PORTS_ENV = "FLINT_WEBHOOKS_REFUSED_PORTS"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# The default ports of `flint up`: Envoy's listener and admin, the hosted app, gRPC.
DEFAULT_OWN_PORTS = frozenset({8080, 9901, 8081, 50051})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# Translated or tunnelled IPv4: a packet to these reaches whatever IPv4 address
# is embedded, through a gateway, so the IPv6 address says nothing about where
# it lands. Refused whatever they embed.
_NAT64 = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # RFC 6052 well-known prefix
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215 local-use prefix
)
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated by RFC 4291


class PortsError(ValueError):
    """FLINT_WEBHOOKS_REFUSED_PORTS is not a list of ports."""


def loopback_allowed_by_env() -> bool:
    """The development switch: local receivers on http://127.0.0.1 (`flint dev`, tests)."""
    return os.environ.get(ALLOW_LOOPBACK_ENV, "") == "1"


def parse_ports(text: str) -> frozenset[int]:
    ports: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise PortsError(f"{REFUSED_PORTS_ENV}: {item!r} is not a port")
        ports.add(int(item))
    return frozenset(ports)


def format_ports(ports: Iterable[int]) -> str:
    return ",".join(str(port) for port in sorted(set(ports)))


@dataclass(frozen=True)
class AddressRules:
    """What the address check allows. `allow_loopback` is the development
    switch; `own_ports` are Flint's own ports, refused on loopback even then."""

    allow_loopback: bool = False
    own_ports: frozenset[int] = field(default=DEFAULT_OWN_PORTS)

    @classmethod
    def from_env(cls) -> AddressRules:
        ports = parse_ports(os.environ.get(REFUSED_PORTS_ENV, ""))
        return cls(allow_loopback=loopback_allowed_by_env(), own_ports=DEFAULT_OWN_PORTS | ports)

    def for_endpoint(self, *, live: bool) -> AddressRules:
        """The development switch never covers an endpoint that receives live events."""
        return replace(self, allow_loopback=False) if live else self


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_problem(address: IPAddress, port: int, rules: AddressRules) -> str | None:
    """Why a delivery must not go to `address`:`port`, or None. Only globally
    routable unicast addresses pass (plus loopback in development, away from
    Flint's own ports); that refuses private ranges (10/8, 172.16/12,
    192.168/16, fc00::/7), link-local (169.254/16 with the metadata services,
    fe80::/10), shared (100.64/10), reserved and unspecified addresses."""
    address = _unmapped(address)
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NAT64):
            return "is a NAT64 address"
        if address in _SIX_TO_FOUR:
            return "is a 6to4 address"
        if address in _IPV4_COMPATIBLE and not (address.is_loopback or address.is_unspecified):
            return "is an IPv4-compatible address"
    if address.is_loopback:
        if not rules.allow_loopback:
            return "is a loopback address"
        if port in rules.own_ports:
            return f"is a loopback address on port {port}, which Flint itself uses"
        return None
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


def url_problem(url: str, *, live: bool, rules: AddressRules) -> UrlCheck | None:
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
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return UrlCheck("INVALID_URL", "must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        return UrlCheck("INVALID_URL", "must not contain credentials")
    if parts.fragment or url.endswith("#"):
        return UrlCheck("INVALID_URL", "must not contain a fragment")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    rules = rules.for_endpoint(live=live)
    host = parts.hostname.rstrip(".").lower()
    literal = _literal_address(host)
    if host in LOOPBACK_NAMES:
        literal = ipaddress.IPv4Address("127.0.0.1")
    if literal is not None:
        problem = address_problem(literal, port, rules)
        if problem:
            return UrlCheck("ADDRESS_NOT_ALLOWED", f"must not point at an address that {problem}")
    loopback = literal is not None and _unmapped(literal).is_loopback
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


def resolve_target(url: str, *, live: bool, rules: AddressRules, resolver: Resolver) -> Target:
    """Resolves the endpoint's host and checks every address it has (one bad
    address is enough to refuse: an attacker controls which one is used).
    `live`: the endpoint receives live events, so the development switch does
    not apply (a host name can be made to resolve to 127.0.0.1 after saving)."""
    rules = rules.for_endpoint(live=live)
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
        problem = address_problem(address, port, rules)
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
