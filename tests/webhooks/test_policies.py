"""The retry policy, the address rules and the signature, on their own."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest
from standardwebhooks import Webhook

from flint.webhooks import retry, signing
from flint.webhooks.addresses import (
    DEFAULT_OWN_PORTS,
    REFUSED_PORTS_ENV,
    AddressRefused,
    AddressRules,
    PortsError,
    address_problem,
    resolve_target,
    url_problem,
)
from flint.webhooks.retry import SCHEDULE, Outcome, decide

# --- retry ----------------------------------------------------------------------


def test_the_published_schedule():
    assert [d.total_seconds() for d in SCHEDULE] == [5, 300, 1800, 7200, 18000, 36000, 36000]


@pytest.mark.parametrize("attempt", range(1, len(SCHEDULE) + 1))
def test_each_retry_waits_its_scheduled_delay_within_jitter(attempt: int):
    decision = decide(Outcome(500), attempt, rng=random.Random(attempt))  # noqa: S311
    assert decision.verdict == "retry"
    assert decision.delay is not None
    expected = SCHEDULE[attempt - 1]
    assert expected * 0.9 <= decision.delay <= expected * 1.1


def test_after_the_last_retry_the_delivery_fails():
    assert decide(Outcome(500), len(SCHEDULE) + 1).verdict == "failed"


def test_2xx_succeeds():
    assert decide(Outcome(204), 1).verdict == "succeeded"


def test_no_response_is_retried():
    assert decide(Outcome(0), 1).verdict == "retry"


def test_deliberate_4xx_is_not_retried():
    for status in (400, 401, 403, 404, 413, 422):
        assert decide(Outcome(status), 1).verdict == "failed", status


def test_408_409_425_429_are_retried():
    for status in (408, 409, 425, 429):
        assert decide(Outcome(status), 1).verdict == "retry", status


def test_410_disables():
    assert decide(Outcome(410), 1).verdict == "gone"


def test_retry_after_lengthens_a_delay_but_never_shortens_it():
    longer = decide(Outcome(429, retry_after=120), 1, rng=random.Random(0))  # noqa: S311
    assert longer.delay == timedelta(seconds=120)
    shorter = decide(Outcome(503, retry_after=1), 3, rng=random.Random(0))  # noqa: S311
    assert shorter.delay is not None
    assert shorter.delay >= SCHEDULE[2] * 0.9


def test_retry_after_is_capped():
    decision = decide(Outcome(429, retry_after=10 * 24 * 3600), 1)
    assert decision.delay == retry.MAX_RETRY_AFTER


def test_retry_after_header_forms():
    assert retry.parse_retry_after("30") == 30
    assert retry.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry.parse_retry_after("-5") is None
    assert retry.parse_retry_after(None) is None


# --- addresses ------------------------------------------------------------------

STRICT = AddressRules()
DEVELOPMENT = AddressRules(allow_loopback=True, own_ports=frozenset({9901, 50051}))


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "fd00::1",
        "fe80::1",
        "0.0.0.0",  # noqa: S104 - connecting to it reaches the local host
        "::",
        "224.0.0.1",
        "ff02::1",
    ],
)
def test_private_link_local_and_metadata_addresses_are_refused(address: str):
    # The development switch allows loopback only, never these.
    assert address_problem(ip_address(address), 443, DEVELOPMENT) is not None


@pytest.mark.parametrize(
    "address", ["::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254"]
)
def test_ipv4_mapped_ipv6_is_checked_as_ipv4(address: str):
    assert address_problem(ip_address(address), 443, STRICT) is not None


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::5db8:d822",  # NAT64 of a public address: still a gateway hop
        "64:ff9b:1::a00:1",  # the local-use NAT64 prefix
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:5db8:d822::1",  # 6to4 of a public address
        "::7f00:1",  # IPv4-compatible 127.0.0.1
    ],
)
def test_nat64_6to4_and_ipv4_compatible_addresses_are_refused(address: str):
    # Python counts these as global; each lands on an embedded IPv4 address.
    assert address_problem(ip_address(address), 443, DEVELOPMENT) is not None


def test_loopback_only_with_the_development_switch():
    for address in ("127.0.0.1", "127.1.2.3", "::1"):
        assert address_problem(ip_address(address), 3000, STRICT) is not None
        assert address_problem(ip_address(address), 3000, DEVELOPMENT) is None


def test_the_development_switch_still_refuses_flints_own_ports():
    for port in (9901, 50051):
        problem = address_problem(ip_address("127.0.0.1"), port, DEVELOPMENT)
        assert problem is not None
        assert str(port) in problem


def test_flints_default_ports_are_always_refused_and_the_supervisor_adds_its_own(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("FLINT_WEBHOOKS_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv(REFUSED_PORTS_ENV, "18080, 19901")
    rules = AddressRules.from_env()
    assert rules.allow_loopback
    assert rules.own_ports == DEFAULT_OWN_PORTS | {18080, 19901}
    assert {8080, 9901, 8081, 50051} <= DEFAULT_OWN_PORTS


def test_a_refused_ports_setting_that_is_not_ports_is_an_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(REFUSED_PORTS_ENV, "9901,admin")
    with pytest.raises(PortsError, match="admin"):
        AddressRules.from_env()


def test_the_development_switch_is_off_unless_set(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLINT_WEBHOOKS_ALLOW_LOOPBACK", raising=False)
    assert not AddressRules.from_env().allow_loopback


def test_public_address_passes():
    assert address_problem(ip_address("93.184.216.34"), 443, STRICT) is None
    assert address_problem(ip_address("2606:2800:220:1:248:1893:25c8:1946"), 443, STRICT) is None


def test_a_host_resolving_to_a_private_address_is_refused_at_delivery():
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # one bad address is enough

    with pytest.raises(AddressRefused, match=r"10\.0\.0\.7"):
        resolve_target(
            "https://hooks.example.com/x", live=False, rules=DEVELOPMENT, resolver=resolver
        )


def test_a_host_resolving_to_nat64_is_refused_at_delivery():
    with pytest.raises(AddressRefused, match="NAT64"):
        resolve_target(
            "https://hooks.example.com/x",
            live=False,
            rules=STRICT,
            resolver=lambda host, port: ["64:ff9b::a9fe:a9fe"],
        )


def test_a_live_endpoint_resolving_to_loopback_is_refused_even_in_development():
    """DNS rebinding: the name passed when saved, then resolves to 127.0.0.1."""

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    url = "https://hooks.example.com:3000/x"
    assert resolve_target(url, live=False, rules=DEVELOPMENT, resolver=resolver)
    with pytest.raises(AddressRefused, match="loopback"):
        resolve_target(url, live=True, rules=DEVELOPMENT, resolver=resolver)


def test_a_host_resolving_to_flints_admin_port_is_refused_at_delivery_in_development():
    with pytest.raises(AddressRefused, match="9901"):
        resolve_target(
            "http://rebind.example.com:9901/config_dump",
            live=False,
            rules=DEVELOPMENT,
            resolver=lambda host, port: ["127.0.0.1"],
        )


def test_delivery_connects_to_the_checked_address_keeping_host_and_sni():
    target = resolve_target(
        "https://hooks.example.com:8443/x?y=1",
        live=True,
        rules=STRICT,
        resolver=lambda host, port: ["93.184.216.34"],
    )
    assert target.url == "https://93.184.216.34:8443/x?y=1"
    assert target.host_header == "hooks.example.com:8443"
    assert target.sni_hostname == "hooks.example.com"


def test_https_is_required_for_live_but_not_for_test_only_endpoints():
    assert url_problem("http://hooks.example.com/x", live=True, rules=STRICT) is not None
    assert url_problem("http://hooks.example.com/x", live=False, rules=STRICT) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9901/config_dump",
        "http://localhost:9901/clusters",
        "http://[::1]:9901/reset_counters",
        "http://[::ffff:127.0.0.1]:50051/",
        "http://127.0.0.1/",  # port 80 is not Flint's, but the switch is off
    ],
)
def test_loopback_urls_are_refused_when_saved_without_the_switch(url: str):
    problem = url_problem(url, live=False, rules=STRICT)
    assert problem is not None
    assert problem.reason == "ADDRESS_NOT_ALLOWED"


def test_the_switch_allows_a_test_only_loopback_receiver_but_not_flints_ports_nor_live():
    assert url_problem("http://127.0.0.1:3000/hooks", live=False, rules=DEVELOPMENT) is None
    assert url_problem("http://localhost:3000/hooks", live=False, rules=DEVELOPMENT) is None
    for url, live in (
        ("http://127.0.0.1:9901/config_dump", False),
        ("http://localhost:50051/", False),
        ("http://127.0.0.1:3000/hooks", True),
        ("https://127.0.0.1:3000/hooks", True),
    ):
        problem = url_problem(url, live=live, rules=DEVELOPMENT)
        assert problem is not None, url
        assert problem.reason == "ADDRESS_NOT_ALLOWED", url


# --- signatures -----------------------------------------------------------------


def test_secret_format():
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(__import__("base64").b64decode(secret[6:])) == 32


def test_signature_verifies_with_standardwebhooks():
    secret = signing.new_secret()
    body = b'{"id":"evt_1","type":"order.paid"}'
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers([secret], "evt_1", now, body)
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "order.paid"}


def test_during_rotation_both_secrets_sign_and_each_verifies():
    old, new = signing.new_secret(), signing.new_secret()
    body = b"{}"
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers([new, old], "evt_2", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
