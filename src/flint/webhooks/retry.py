"""When a failed delivery is tried again: the published schedule, as data, and
the one function that applies it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

# Delay before each retry after the first attempt: 8 attempts over about 28 h.
SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
# Each delay is spread by up to ±10 %, so a burst of failures does not retry in lockstep.
JITTER = 0.1
# A Retry-After header can lengthen a delay up to this, never shorten it.
MAX_RETRY_AFTER = timedelta(hours=10)
# Deliberate refusals that are still worth retrying.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
GONE = 410


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: a status code (0 if no response) and any
    Retry-After in seconds."""

    status_code: int
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True)
class Decision:
    # "succeeded", "retry", "failed" (no more attempts) or "gone" (disable the endpoint).
    verdict: str
    delay: timedelta | None = None


def decide(
    outcome: Outcome,
    attempt_number: int,
    schedule: Sequence[timedelta] = SCHEDULE,
    *,
    rng: random.Random | None = None,
) -> Decision:
    """After attempt `attempt_number` (1 = the first), what happens next."""
    if outcome.succeeded:
        return Decision("succeeded")
    if outcome.status_code == GONE:
        return Decision("gone")
    if 400 <= outcome.status_code < 500 and outcome.status_code not in RETRYABLE_4XX:
        return Decision("failed")
    if attempt_number > len(schedule):
        return Decision("failed")
    delay = schedule[attempt_number - 1]
    spread = (rng or random).uniform(-JITTER, JITTER)
    delay = delay * (1 + spread)
    if outcome.retry_after is not None and outcome.retry_after > 0:
        asked = min(timedelta(seconds=outcome.retry_after), MAX_RETRY_AFTER)
        delay = max(delay, asked)
    return Decision("retry", delay)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def parse_schedule(text: str) -> tuple[timedelta, ...]:
    """ "5,300,1800" (seconds) as a schedule, for `flint worker --retry-schedule`."""
    return tuple(timedelta(seconds=float(part)) for part in text.split(",") if part.strip())
