"""The retry policy, the address rules and the signature, on their own."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest
from standardwebhooks import Webhook

from flint.webhooks import retry, signing
from flint.webhooks.addresses import (
    AddressRefused,
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


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "fd00::1"],
)
def test_private_link_local_and_metadata_addresses_are_refused(address: str):
    assert address_problem(ip_address(address), allow_loopback=True) is not None


def test_ipv4_mapped_ipv6_is_checked_as_ipv4():
    assert address_problem(ip_address("::ffff:10.0.0.1"), allow_loopback=True) is not None


def test_loopback_only_with_the_development_setting():
    for address in ("127.0.0.1", "::1"):
        assert address_problem(ip_address(address), allow_loopback=False) is not None
        assert address_problem(ip_address(address), allow_loopback=True) is None


def test_public_address_passes():
    assert address_problem(ip_address("93.184.216.34"), allow_loopback=False) is None


def test_a_host_resolving_to_a_private_address_is_refused_at_delivery():
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # one bad address is enough

    with pytest.raises(AddressRefused, match=r"10\.0\.0\.7"):
        resolve_target("https://hooks.example.com/x", allow_loopback=False, resolver=resolver)


def test_delivery_connects_to_the_checked_address_keeping_host_and_sni():
    target = resolve_target(
        "https://hooks.example.com:8443/x?y=1",
        allow_loopback=False,
        resolver=lambda host, port: ["93.184.216.34"],
    )
    assert target.url == "https://93.184.216.34:8443/x?y=1"
    assert target.host_header == "hooks.example.com:8443"
    assert target.sni_hostname == "hooks.example.com"


def test_https_is_required_for_live_but_not_for_test_only_endpoints():
    assert url_problem("http://hooks.example.com/x", live=True, allow_loopback=False) is not None
    assert url_problem("http://hooks.example.com/x", live=False, allow_loopback=False) is None


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
