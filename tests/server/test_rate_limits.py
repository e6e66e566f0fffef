"""API rate limits per caller: GCRA in this process or in a shared Redis, the
defaults and the operator's overrides, RESOURCE_EXHAUSTED / 429 RATE_LIMITED
with Retry-After and the RateLimit-* fields, on gRPC and through Envoy.

No test waits for time to pass: the limiter's clock is injected, and where the
real server's clock runs, the bound checked is computed from the time measured
around the calls (a bucket of rate r and burst b allows at most b + r·t calls in t
seconds)."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest

from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.common import rate_limit_overrides as overrides
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import Database
from flint.common.errors import FlintError
from flint.common.ratelimit import Limit, Limiter, LocalStore, RedisStore, SharedStore
from flint.server.ratelimit import Defaults, RateLimits, rate_limited
from tests.conftest import MerchantCreds, bearer, free_port
from tests.errors import grpc_error, rest_error


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the algorithm -------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_refuses_until_one_interval_passed():
    clock = FakeClock()
    limiter = Limiter(LocalStore(clock))
    limit = Limit(per_second=4, burst=4)
    answers = [limiter.check("k", limit) for _ in range(4)]
    assert [a.allowed for a in answers] == [True] * 4
    assert [a.remaining for a in answers] == [3, 2, 1, 0]
    refused = limiter.check("k", limit)
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.25)
    assert refused.reset_seconds == pytest.approx(1.0)
    clock.now += 0.25
    assert limiter.check("k", limit).allowed
    assert not limiter.check("k", limit).allowed
    # A full second idle refills the whole burst, and no more.
    clock.now += 10
    assert sum(limiter.check("k", limit).allowed for _ in range(10)) == 4


def test_buckets_of_different_keys_are_independent():
    limiter = Limiter(LocalStore(FakeClock()))
    limit = Limit(per_second=1, burst=1)
    assert limiter.check("a", limit).allowed
    assert not limiter.check("a", limit).allowed
    assert limiter.check("b", limit).allowed


def test_a_limit_needs_a_positive_rate_and_burst():
    with pytest.raises(ValueError, match="positive rate"):
        Limit(per_second=0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        Limit(per_second=1, burst=0)


def test_redis_buckets_are_shared_by_every_process_that_uses_the_store(redis_url: str):
    # Two stores stand for two replicas: one bucket between them, not one each.
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    limit = Limit(per_second=1, burst=3)
    started = time.monotonic()
    answers = [Limiter(store).check("shared-key", limit) for store in (first, second) * 4]
    elapsed = time.monotonic() - started
    allowed = sum(a.allowed for a in answers)
    assert 3 <= allowed <= 3 + int(elapsed) + 1
    refused = next(a for a in answers if not a.allowed)
    assert 0 < refused.retry_after_seconds <= 1.0
    assert refused.remaining == 0
    first.close()
    second.close()


def test_busy_callers_lease_batches_from_redis_and_replicas_never_exceed_the_bucket(
    redis_url: str,
):
    clock = FakeClock()
    first, second = RedisStore(redis_url, clock=clock), RedisStore(redis_url, clock=clock)
    # A burst of 100 at 1 a second: leases of 10.
    limit = Limit(per_second=1, burst=100)
    started = time.monotonic()
    answers = [Limiter(store).check("leased-key", limit) for store in (first, second) * 60]
    elapsed = time.monotonic() - started
    allowed = sum(a.allowed for a in answers)
    # Leased requests come out of the one shared bucket: together, no more than it holds.
    assert 100 <= allowed <= 100 + int(elapsed) + 1
    # …in about one round trip per ten calls while the bucket had requests to lease.
    assert first.round_trips + second.round_trips <= 10 + 20 + 2
    # The first answer reports what the bucket holds, this replica's lease included.
    assert answers[0].remaining == 99
    first.close()
    second.close()


def test_an_unused_lease_is_dropped_after_a_second(redis_url: str):
    clock = FakeClock()
    store = RedisStore(redis_url, clock=clock)
    limit = Limit(per_second=1000, burst=1000)
    assert Limiter(store).check("stale-lease", limit).allowed
    assert Limiter(store).check("stale-lease", limit).allowed
    assert store.round_trips == 1
    clock.now += 1
    assert Limiter(store).check("stale-lease", limit).allowed
    assert store.round_trips == 2
    store.close()


def test_small_limits_are_not_leased(redis_url: str):
    store = RedisStore(redis_url)
    limit = Limit(per_second=5, burst=5)
    for _ in range(3):
        Limiter(store).check("exact-key", limit)
    assert store.round_trips == 3
    store.close()


def test_a_store_that_is_down_fails_open_to_limits_in_this_process():
    clock = FakeClock()
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    store = SharedStore(dead, LocalStore(clock), retry_seconds=5, clock=clock)
    limiter = Limiter(store)
    limit = Limit(per_second=2, burst=2)
    # Served (not refused, not an error) while the store is unreachable…
    assert [limiter.check("k", limit).allowed for _ in range(3)] == [True, True, False]
    assert store.degraded
    dead.close()


def test_the_shared_store_is_used_again_once_it_answers(redis_url: str):
    clock = FakeClock()

    class Flaky:
        def __init__(self) -> None:
            self.up = False
            self.real = RedisStore(redis_url)

        def take(self, key: str, limit: Limit) -> tuple[bool, int, int]:
            if not self.up:
                raise ConnectionError("store down")
            return self.real.take(key, limit)

    flaky = Flaky()
    local = LocalStore(clock)
    store = SharedStore(flaky, local, retry_seconds=5, clock=clock)
    limit = Limit(per_second=1, burst=1)
    assert Limiter(store).check("recovering", limit).allowed
    assert store.degraded
    flaky.up = True
    # Not tried again before the retry delay: still the local bucket (now empty).
    assert not Limiter(store).check("recovering", limit).allowed
    clock.now += 5
    # Redis is back: its own (fresh) bucket answers.
    assert Limiter(store).check("recovering", limit).allowed
    assert not store.degraded
    flaky.real.close()


# --- who is limited, and how much ------------------------------------------------------


def _merchant(environment: str, merchant_id: str = "mer_1") -> Principal:
    return Principal(PrincipalKind.MERCHANT, merchant_id, environment)


def test_defaults_are_per_environment_and_reads_and_writes_apart(db: Database):
    limits = RateLimits(
        db, Limiter(LocalStore(FakeClock())), Defaults(live_per_second=3, test_per_second=2)
    )
    test = [limits.check(_merchant("test", "mer_defaults"), write=False) for _ in range(3)]
    assert [d.allowed for d in test if d] == [True, True, False]
    # Writes have their own bucket, and live mode its own limit.
    assert limits.check(_merchant("test", "mer_defaults"), write=True).allowed  # type: ignore[union-attr]
    live = [limits.check(_merchant("live", "mer_defaults"), write=False) for _ in range(4)]
    assert [d.allowed for d in live if d] == [True, True, True, False]


def test_an_app_is_limited_per_install_not_per_app(db: Database):
    limits = RateLimits(db, Limiter(LocalStore(FakeClock())), Defaults(1, 1))

    def app_on(merchant: str) -> Principal:
        return Principal(
            PrincipalKind.APP, f"ins_{merchant}", "live", merchant_id=merchant, app_id="app_1"
        )

    assert limits.check(app_on("mer_a"), write=False).allowed  # type: ignore[union-attr]
    assert not limits.check(app_on("mer_a"), write=False).allowed  # type: ignore[union-attr]
    assert limits.check(app_on("mer_b"), write=False).allowed  # type: ignore[union-attr]


def test_admin_and_internal_keys_are_not_limited(db: Database):
    limits = RateLimits(db, Limiter(LocalStore(FakeClock())), Defaults(1, 1))
    for kind in (PrincipalKind.ADMIN, PrincipalKind.INTERNAL):
        assert limits.check(Principal(kind, "key_1"), write=True) is None


def test_an_override_replaces_the_defaults_for_its_subject_only(db: Database):
    subject = overrides.merchant_subject("mer_override", "live")
    with db.unit_of_work() as uow:
        overrides.set_override(uow.session, subject, reads=5, writes=1, now=uow.now)
        uow.commit()
    limits = RateLimits(db, Limiter(LocalStore(FakeClock())), Defaults(2, 2))
    reads = [limits.check(_merchant("live", "mer_override"), write=False) for _ in range(6)]
    assert sum(bool(d and d.allowed) for d in reads) == 5
    writes = [limits.check(_merchant("live", "mer_override"), write=True) for _ in range(2)]
    assert [bool(d and d.allowed) for d in writes] == [True, False]
    # The same merchant's test mode keeps the default.
    tests = [limits.check(_merchant("test", "mer_override"), write=False) for _ in range(3)]
    assert sum(bool(d and d.allowed) for d in tests) == 2


def test_overrides_are_cached_then_read_again(db: Database):
    clock = FakeClock()
    subject = overrides.merchant_subject("mer_cached", "test")
    limits = RateLimits(
        db, Limiter(LocalStore(clock)), Defaults(1, 1), cache_seconds=10, clock=clock
    )
    assert limits.check(_merchant("test", "mer_cached"), write=False).limit.burst == 1  # type: ignore[union-attr]
    with db.unit_of_work() as uow:
        overrides.set_override(uow.session, subject, reads=7, writes=7, now=uow.now)
        uow.commit()
    clock.now += 1
    assert limits.check(_merchant("test", "mer_cached"), write=False).limit.burst == 1  # type: ignore[union-attr]
    clock.now += 10
    assert limits.check(_merchant("test", "mer_cached"), write=False).limit.burst == 7  # type: ignore[union-attr]


def test_an_override_out_of_range_is_refused(db: Database):
    with db.unit_of_work() as uow, pytest.raises(FlintError) as refused:
        overrides.set_override(uow.session, "partner:par_1", reads=0, writes=5, now=uow.now)
    assert refused.value.reason == "RATE_LIMIT_OUT_OF_RANGE"
    assert refused.value.violations[0].field == "reads"


def test_a_subject_must_name_a_caller():
    with pytest.raises(FlintError) as refused:
        overrides.subject_for(merchant_id="mer_1")
    assert (refused.value.reason, refused.value.violations[0].field) == (
        "RATE_LIMIT_SUBJECT_INVALID",
        "environment",
    )
    assert overrides.subject_for(app_id="app_1", merchant_id="mer_1", environment="test") == (
        "app:app_1:mer_1:test"
    )


def test_the_refusal_says_when_to_retry_in_whole_seconds_rounded_up():
    limiter = Limiter(LocalStore(FakeClock()))
    assert limiter.check("k", Limit(per_second=4, burst=1)).allowed
    refused = limiter.check("k", Limit(per_second=4, burst=1))
    assert refused.retry_after_seconds == pytest.approx(0.25)
    error = rate_limited(refused)
    assert (error.code.value, error.reason) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
    assert error.metadata["retry_after_seconds"] == "1"


# --- through the real server -------------------------------------------------------------


def _limit_merchant(db: Database, merchant: MerchantCreds, *, reads: int, writes: int) -> None:
    # Before the merchant's first call: nothing is cached for it yet.
    with db.unit_of_work() as uow:
        subject = overrides.merchant_subject(merchant.id, "test")
        overrides.set_override(uow.session, subject, reads=reads, writes=writes, now=uow.now)
        uow.commit()


@pytest.fixture
def orders(channel: grpc.Channel) -> orders_grpc.OrdersServiceStub:
    return orders_grpc.OrdersServiceStub(channel)


def test_grpc_caller_over_its_limit_gets_resource_exhausted_with_retry_after(
    db: Database, new_merchant: MerchantCreds, orders: orders_grpc.OrdersServiceStub
):
    _limit_merchant(db, new_merchant, reads=1, writes=1000)
    outcomes: list[grpc.RpcError | None] = []
    started = time.monotonic()
    for _ in range(5):
        try:
            orders.ListOrders(orders_pb.ListOrdersRequest(), metadata=bearer(new_merchant.test_key))
            outcomes.append(None)
        except grpc.RpcError as error:
            outcomes.append(error)
    elapsed = time.monotonic() - started
    assert 1 <= outcomes.count(None) <= 1 + int(elapsed) + 1
    refused = next(o for o in outcomes if o is not None)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = grpc_error(refused)
    assert details.reason == "RATE_LIMITED"
    assert details.metadata["retry_after_seconds"] == "1"
    trailers = dict(refused.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["retry-after"] == "1"
    assert trailers["ratelimit-limit"] == "1"
    assert trailers["ratelimit-remaining"] == "0"


def test_well_behaved_grpc_calls_carry_the_ratelimit_fields(
    new_merchant: MerchantCreds, orders: orders_grpc.OrdersServiceStub
):
    _, call = orders.ListOrders.with_call(
        orders_pb.ListOrdersRequest(), metadata=bearer(new_merchant.test_key)
    )
    # In the trailers, which go out with the status (no extra send).
    fields = dict(call.trailing_metadata())
    assert "ratelimit-limit" not in dict(call.initial_metadata())
    # The suite's own (generous) default, not a refusal.
    assert int(fields["ratelimit-limit"]) >= 1000
    assert int(fields["ratelimit-remaining"]) == int(fields["ratelimit-limit"]) - 1
    assert "retry-after" not in fields


def test_rest_caller_over_its_limit_gets_429_with_retry_after_and_ratelimit_headers(
    db: Database, new_merchant: MerchantCreds, rest: httpx.Client
):
    _limit_merchant(db, new_merchant, reads=2, writes=1000)
    headers = {"Authorization": f"Bearer {new_merchant.test_key}"}
    started = time.monotonic()
    responses = [rest.get("/v1/orders", headers=headers) for _ in range(6)]
    elapsed = time.monotonic() - started
    ok = [r for r in responses if r.status_code == 200]
    assert 2 <= len(ok) <= 2 + int(2 * elapsed) + 1
    first = ok[0]
    assert first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1"
    assert int(first.headers["ratelimit-reset"]) >= 1
    refused = next(r for r in responses if r.status_code != 200)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-remaining"] == "0"
    error = rest_error(refused)
    assert error.reason == "RATE_LIMITED"
    assert error.metadata["retry_after_seconds"] == "1"
