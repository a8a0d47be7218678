"""When to try a failed delivery again, and when to stop: EventBridge's retry policy.

How it is shaped and why: docs/delivery.md ("stellwerk.delivery.backoff").
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

import msgspec

from stellwerk.delivery.model import GiveUp, RetryLater
from stellwerk.rules import RetryPolicy

BASE_SECONDS: Final = 1.0
CAP_SECONDS: Final = 900.0


def backoff_seconds(
    retry: int,
    *,
    rng: random.Random | None = None,
    base: float = BASE_SECONDS,
    cap: float = CAP_SECONDS,
) -> float:
    """The delay before retry number `retry` (1 for the first retry): uniform in [0, ceiling]."""
    if retry < 1:
        raise ValueError(f"retries are numbered from 1, not {retry}")
    # 2**60 s is past any cap; bounding the exponent keeps the float finite for any retry number.
    ceiling = min(cap, base * 2.0 ** min(retry - 1, 60))
    return (rng or random).uniform(0.0, ceiling)


class Verdict(StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    DROP = "drop"


class Decision(msgspec.Struct, frozen=True):
    """What becomes of a delivery after a failed attempt; `retry_at` is set for `RETRY`."""

    verdict: Verdict
    reason: str
    retry_at: datetime | None = None


def decide(
    outcome: RetryLater | GiveUp,
    *,
    attempts: int,
    age_from: datetime,
    policy: RetryPolicy,
    dead_letter: bool,
    now: datetime,
    rng: random.Random | None = None,
) -> Decision:
    """Decide after a failed attempt. `attempts` counts attempts made, the failed one included."""
    if isinstance(outcome, RetryLater):
        retries_made = attempts - 1
        if retries_made >= policy.maximum_retry_attempts:
            reason = (
                f"{outcome.reason} (gave up after {attempts} attempts:"
                f" maximum_retry_attempts is {policy.maximum_retry_attempts})"
            )
            return _exhausted(reason, dead_letter)
        delay = backoff_seconds(retries_made + 1, rng=rng)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        retry_at = now + timedelta(seconds=delay)
        deadline = age_from + timedelta(seconds=policy.maximum_event_age_seconds)
        if retry_at > deadline:
            reason = (
                f"{outcome.reason} (gave up after {attempts} attempts: the next one would come"
                f" after maximum_event_age_seconds, {policy.maximum_event_age_seconds})"
            )
            return _exhausted(reason, dead_letter)
        return Decision(Verdict.RETRY, outcome.reason, retry_at)
    return _exhausted(outcome.reason, dead_letter)


def _exhausted(reason: str, dead_letter: bool) -> Decision:
    return Decision(Verdict.DEAD_LETTER if dead_letter else Verdict.DROP, reason)
