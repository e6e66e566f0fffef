"""API rate limits per caller, checked by the RPC pipeline (server/rpc.py) right
after authentication, for gRPC and REST alike (REST reaches the same pipeline
through Envoy's transcoder).

Who is one caller (its *subject*):
- a merchant's secret key: the merchant in one environment;
- an app's access token: the app on one install (app × merchant × environment);
- a partner key: the partner;
- a hosted-page merchant session: the merchant.
Admin and internal keys (the operator, the hosted app calling on a browser's
behalf) are not limited here: the hosted app limits browsers per address.

Each subject has two buckets, reads and writes (the pipeline's own split: write
RPCs are those that take an idempotency key), so a burst of list calls never
blocks a refund. Defaults follow Stripe's: 100 reads and 100 writes a second in
live mode, 25 in test mode, each with a burst of one second's worth. An
operator override (`flint admin set-rate-limit`) replaces both for one subject;
overrides are cached per process for `OVERRIDE_CACHE_SECONDS`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flint.common import rate_limit_overrides as overrides
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import Database
from flint.common.errors import Code, FlintError
from flint.common.ratelimit import Decision, Limit, Limiter, header_seconds

# "off" serves without API limits: for measuring their cost (bench), never in production.
SWITCH_ENV = "FLINT_RATE_LIMITS"
LIVE_ENV = "FLINT_RATE_LIMIT_LIVE_PER_SECOND"
TEST_ENV = "FLINT_RATE_LIMIT_TEST_PER_SECOND"
DEFAULT_LIVE_PER_SECOND = 100
DEFAULT_TEST_PER_SECOND = 25
OVERRIDE_CACHE_SECONDS = 10.0
REASON = "RATE_LIMITED"


def switched_off(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    value = env.get(SWITCH_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"{SWITCH_ENV} must be on or off, not {value!r}")
    return value == "off"


@dataclass(frozen=True)
class Defaults:
    live_per_second: int = DEFAULT_LIVE_PER_SECOND
    test_per_second: int = DEFAULT_TEST_PER_SECOND

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Defaults:
        env = os.environ if environ is None else environ

        def number(name: str, default: int) -> int:
            raw = env.get(name, "")
            if not raw:
                return default
            value = int(raw)
            if value < 1:
                raise ValueError(f"{name} must be 1 or more, not {raw!r}")
            return value

        return cls(
            number(LIVE_ENV, DEFAULT_LIVE_PER_SECOND), number(TEST_ENV, DEFAULT_TEST_PER_SECOND)
        )

    def per_second(self, environment: str) -> int:
        return self.test_per_second if environment == "test" else self.live_per_second


def subject_of(principal: Principal) -> tuple[str, str] | None:
    """(subject, environment) of the caller, or None for callers not limited here."""
    kind = principal.kind
    if kind is PrincipalKind.MERCHANT:
        env = principal.environment
        return overrides.merchant_subject(principal.id, env), env
    if kind is PrincipalKind.APP:
        env = principal.environment
        return overrides.app_subject(principal.app_id, principal.merchant_id, env), env
    if kind is PrincipalKind.PARTNER:
        return overrides.partner_subject(principal.id), "live"
    if kind is PrincipalKind.MERCHANT_SESSION:
        return f"merchant_session:{principal.id}", "live"
    return None


def _limit(per_second: int) -> Limit:
    return Limit(per_second=per_second, burst=per_second)


class RateLimits:
    def __init__(
        self,
        db: Database,
        limiter: Limiter,
        defaults: Defaults | None = None,
        *,
        cache_seconds: float = OVERRIDE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._limiter = limiter
        self._defaults = defaults or Defaults.from_env()
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()

    def check(self, principal: Principal, *, write: bool) -> Decision | None:
        """Takes one request from the caller's bucket (refused when the decision
        is not `allowed`: see `rate_limited`). None: this caller is not limited."""
        found = subject_of(principal)
        if found is None:
            return None
        subject, environment = found
        override = self._override(subject)
        if override is None:
            per_second = self._defaults.per_second(environment)
        else:
            per_second = override[1] if write else override[0]
        return self._limiter.check(f"{subject}:{'write' if write else 'read'}", _limit(per_second))

    def _override(self, subject: str) -> tuple[int, int] | None:
        now = self._clock()
        cached = self._cache.get(subject)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self._db.read() as session:
            found = overrides.find_override(session, subject)
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()  # a crude bound; entries are cheap to reload
            self._cache[subject] = (now + self._cache_seconds, found)
        return found


def rate_limited(decision: Decision) -> FlintError:
    retry_after = decision.retry_after_seconds
    return FlintError(
        Code.RESOURCE_EXHAUSTED,
        REASON,
        f"Too many requests: the limit is {decision.limit.burst} a second; "
        f"retry in {math.ceil(retry_after * 1000) / 1000:g} s",
        metadata={
            "retry_after_seconds": str(header_seconds(retry_after)),
            "limit_per_second": f"{decision.limit.per_second:g}",
        },
    )


def headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), and
    Retry-After on refusals. As gRPC metadata they become HTTP headers on REST."""
    fields = (
        ("ratelimit-limit", str(decision.limit.burst)),
        ("ratelimit-remaining", str(decision.remaining)),
        ("ratelimit-reset", str(header_seconds(decision.reset_seconds))),
    )
    if decision.allowed:
        return fields
    return (*fields, ("retry-after", str(header_seconds(decision.retry_after_seconds))))
