"""The rate limiter: GCRA (the generic cell rate algorithm, a token bucket kept as
one timestamp per key) in a store that every process of a stack shares.

Why GCRA: one number per key (the "theoretical arrival time", TAT), updated in
one atomic step, gives a steady rate with a burst, and tells exactly how long a
refused caller must wait — no background refill, no counters per window.

Where the TATs live:
- `LocalStore`: this process's memory. Right for one process (`flint serve`
  alone, the hosted app), and the fallback when the shared store is down.
- `RedisStore`: a Redis server (`FLINT_RATE_LIMIT_URL=redis://…`), one Lua
  script per check, so the limit holds across `--replicas N` (one bucket per
  caller, not N). Redis' own clock is used, so replicas' clocks need not agree.
- `SharedStore`: Redis, failing open to a `LocalStore` while Redis is
  unreachable: a rate-limiter outage must not become a payments outage; each
  replica then enforces the whole limit on its own (at worst N × the limit)
  until Redis answers again.

Nothing here knows who the callers are; the RPC pipeline and the hosted app
choose the keys and limits (server/ratelimit.py, hosted/ratelimit.py).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from flint.common.logs import log_event

logger = logging.getLogger("flint.ratelimit")

STORE_URL_ENV = "FLINT_RATE_LIMIT_URL"
MICROS = 1_000_000


@dataclass(frozen=True)
class Limit:
    """`per_second` requests a second on average, with up to `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"a limit needs a positive rate and a burst of 1 or more: {self}")

    @property
    def interval_us(self) -> int:
        """Microseconds one request uses up."""
        return max(1, round(MICROS / self.per_second))

    @property
    def capacity_us(self) -> int:
        return self.interval_us * self.burst


@dataclass(frozen=True)
class Decision:
    """The answer for one request, with what the RateLimit headers report."""

    allowed: bool
    limit: Limit
    # Requests that would be allowed right now, after this one.
    remaining: int
    # Seconds until the bucket is full again (RateLimit-Reset).
    reset_seconds: float
    # Refused requests: seconds until one would be allowed (Retry-After).
    retry_after_seconds: float


class Store(Protocol):
    def take(self, key: str, limit: Limit) -> tuple[bool, int, int]:
        """Takes one request from `key`'s bucket. Returns (allowed, backlog, wait)
        in microseconds: backlog is how far the TAT is ahead of now after the
        call, wait how long until a refused request would be allowed."""
        ...


def _gcra(tat: int, now: int, limit: Limit) -> tuple[bool, int, int, int]:
    """One GCRA step: (allowed, new TAT, backlog, wait). The Lua script below is
    the same arithmetic."""
    tat = max(tat, now)
    new_tat = tat + limit.interval_us
    allow_at = new_tat - limit.capacity_us
    if now < allow_at:
        return False, tat, tat - now, allow_at - now
    return True, new_tat, new_tat - now, 0


def decide(limit: Limit, allowed: bool, backlog_us: int, wait_us: int) -> Decision:
    remaining = max(0, (limit.capacity_us - backlog_us) // limit.interval_us)
    return Decision(
        allowed=allowed,
        limit=limit,
        remaining=int(remaining),
        reset_seconds=backlog_us / MICROS,
        retry_after_seconds=wait_us / MICROS,
    )


class LocalStore:
    """TATs in this process's memory. Keys whose bucket is full again carry no
    information and are dropped, so memory follows the callers active in the
    last burst window, not every caller ever seen."""

    PRUNE_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def take(self, key: str, limit: Limit) -> tuple[bool, int, int]:
        now = int(self._clock() * MICROS)
        with self._lock:
            allowed, tat, backlog, wait = _gcra(self._tats.get(key, now), now, limit)
            self._tats[key] = tat
            self._calls += 1
            if self._calls % self.PRUNE_EVERY == 0:
                self._tats = {k: v for k, v in self._tats.items() if v > now}
        return allowed, backlog, wait

    def __len__(self) -> int:
        return len(self._tats)


# KEYS[1]: the bucket; ARGV: interval and capacity in microseconds, and how many
# requests to take at most (a lease, see RedisStore). Takes as many as the bucket
# holds, up to that; returns {taken, backlog, wait}. Redis' clock (TIME) is the
# one clock all replicas share. The key expires once the bucket is full again,
# so idle callers cost no memory.
_GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local available = math.floor((now + capacity - tat) / interval)
if available < 1 then
  return {0, tat - now, tat + interval - capacity - now}
end
if available > wanted then available = wanted end
local new_tat = tat + available * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return {available, new_tat - now, 0}
"""

# A limiter check must stay a small part of a ~1 ms call: answer or give up fast.
REDIS_TIMEOUT_SECONDS = 0.25
KEY_PREFIX = "flint:rl:"
# A process takes up to this share of a bucket's burst from Redis at once and
# hands it out locally: one round trip per several calls of a busy caller.
LEASE_SHARE = 10
# Leased requests unused after this long are dropped (the bucket has refilled
# by then anyway).
LEASE_SECONDS = 1.0


@dataclass
class _Lease:
    limit: Limit
    left: int
    # The bucket's backlog in Redis right after the lease, and when (µs, local clock).
    backlog_us: int
    at_us: int


class RedisStore:
    """Buckets in Redis. A busy caller's requests are leased in small batches
    (`LEASE_SHARE`): a replica takes up to a tenth of the burst in one round trip
    and serves it from memory. Leased requests are already taken from the shared
    bucket, so replicas together never exceed the limit; the price is that a
    replica's unused lease (at most a tenth of the burst, for at most
    `LEASE_SECONDS`) is not available to the others. Callers with small limits
    (burst under 20) lease one request at a time: exact."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
        )
        self._script: Any = self._client.register_script(_GCRA_SCRIPT)
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self.round_trips = 0

    def take(self, key: str, limit: Limit) -> tuple[bool, int, int]:
        now = int(self._clock() * MICROS)
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None:
                if (
                    lease.left > 0
                    and lease.limit == limit
                    and now - lease.at_us < LEASE_SECONDS * MICROS
                ):
                    lease.left -= 1
                    # As if each leased request were taken when it is used.
                    backlog = (
                        lease.backlog_us - lease.left * limit.interval_us - (now - lease.at_us)
                    )
                    return True, max(backlog, 0), 0
                del self._leases[key]
        wanted = max(1, limit.burst // LEASE_SHARE)
        self.round_trips += 1
        taken, backlog, wait = self._script(
            keys=[KEY_PREFIX + key], args=[limit.interval_us, limit.capacity_us, wanted]
        )
        taken, backlog = int(taken), int(backlog)
        if taken > 1:
            with self._lock:
                self._leases[key] = _Lease(limit, taken - 1, backlog, now)
            backlog -= (taken - 1) * limit.interval_us
        return taken > 0, backlog, int(wait)

    def close(self) -> None:
        self._client.close()


class SharedStore:
    """Redis first; while it fails, the local store (fail open, still limited).
    After a failure Redis is tried again only after `retry_seconds`, so an outage
    does not add a connect timeout to every call."""

    def __init__(
        self,
        remote: Store,
        local: LocalStore | None = None,
        *,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remote = remote
        self._local = local or LocalStore(clock)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._down_until: float | None = None

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    def take(self, key: str, limit: Limit) -> tuple[bool, int, int]:
        down_until = self._down_until
        if down_until is None or self._clock() >= down_until:
            try:
                answer = self._remote.take(key, limit)
            except Exception as error:
                if down_until is None:
                    log_event(
                        logger,
                        "rate_limit_store_unavailable",
                        level=logging.WARNING,
                        error=f"{type(error).__name__}: {error}",
                        fallback="per-process limits",
                    )
                self._down_until = self._clock() + self._retry_seconds
            else:
                if down_until is not None:
                    log_event(logger, "rate_limit_store_recovered")
                    self._down_until = None
                return answer
        return self._local.take(key, limit)


class Limiter:
    def __init__(self, store: Store) -> None:
        self.store = store

    def check(self, key: str, limit: Limit) -> Decision:
        return decide(limit, *self.store.take(key, limit))


def limiter_from_env(environ: dict[str, str] | None = None) -> Limiter:
    """The shared store `FLINT_RATE_LIMIT_URL` names, else this process's memory."""
    env = os.environ if environ is None else environ
    url = env.get(STORE_URL_ENV, "")
    if not url:
        return Limiter(LocalStore())
    return Limiter(SharedStore(RedisStore(url)))


def header_seconds(seconds: float) -> int:
    """Seconds as HTTP headers carry them: whole, rounded up (a client that waits
    less than asked is only refused again), at least 1 when there is any wait."""
    return math.ceil(seconds) if seconds > 0 else 0
