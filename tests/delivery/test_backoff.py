"""Backoff with full jitter and EventBridge's two retry limits."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from tests.storage.eventlog_support import T0

from stellwerk.delivery.backoff import CAP_SECONDS, Verdict, backoff_seconds, decide
from stellwerk.delivery.model import GiveUp, RetryLater
from stellwerk.rules import RetryPolicy


@pytest.mark.parametrize("retry", [1, 2, 5, 10, 11, 50, 185, 10_000])
def test_delays_stay_under_the_exponential_ceiling(retry: int) -> None:
    rng = random.Random(retry)
    ceiling = CAP_SECONDS if retry > 30 else min(CAP_SECONDS, 2.0 ** (retry - 1))
    delays = [backoff_seconds(retry, rng=rng) for _ in range(500)]
    assert all(0 <= delay <= ceiling for delay in delays)
    # Full jitter: the delays spread over the whole range, not bunched at one end.
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9


def test_retries_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_seconds(0)


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(7)
    for _ in range(100):
        decision = decide(
            RetryLater("429", retry_after=30.0),
            attempts=1,
            age_from=T0,
            policy=RetryPolicy(),
            dead_letter=True,
            now=T0,
            rng=rng,
        )
        assert decision.verdict is Verdict.RETRY
        assert decision.retry_at is not None
        assert decision.retry_at >= T0 + timedelta(seconds=30)


def test_a_later_backoff_wins_over_a_short_retry_after() -> None:
    rng = random.Random(3)
    retry_ats = []
    for _ in range(200):
        decision = decide(
            RetryLater("503", retry_after=1.0),
            attempts=20,
            age_from=T0,
            policy=RetryPolicy(),
            dead_letter=True,
            now=T0,
            rng=rng,
        )
        assert decision.retry_at is not None
        retry_ats.append(decision.retry_at)
    assert max(retry_ats) > T0 + timedelta(seconds=CAP_SECONDS / 2)


@pytest.mark.parametrize("maximum", [0, 1, 3, 185])
def test_gives_up_after_maximum_retry_attempts(maximum: int) -> None:
    policy = RetryPolicy(maximum_retry_attempts=maximum, maximum_event_age_seconds=86_400)
    verdicts = [
        decide(
            RetryLater("500"),
            attempts=attempts,
            age_from=T0,
            policy=policy,
            dead_letter=True,
            now=T0,
            rng=random.Random(attempts),
        ).verdict
        for attempts in range(1, maximum + 2)
    ]
    # maximum retries after the first attempt: attempts 1..maximum retry, attempt maximum+1 ends.
    assert verdicts == [Verdict.RETRY] * maximum + [Verdict.DEAD_LETTER]


def test_gives_up_when_the_next_attempt_would_be_too_old() -> None:
    policy = RetryPolicy(maximum_retry_attempts=185, maximum_event_age_seconds=60)
    now = T0 + timedelta(seconds=50)
    late = decide(
        RetryLater("500", retry_after=11),
        attempts=1,
        age_from=T0,
        policy=policy,
        dead_letter=True,
        now=now,
    )
    assert late.verdict is Verdict.DEAD_LETTER
    assert "maximum_event_age_seconds" in late.reason
    assert late.reason.startswith("500")
    in_time = decide(
        RetryLater("500", retry_after=10),
        attempts=1,
        age_from=T0,
        policy=policy,
        dead_letter=True,
        now=now,
        rng=random.Random(1),
    )
    assert in_time.verdict is Verdict.RETRY
    # Age counts from age_from (a redrive), not from some fixed point.
    redriven = decide(
        RetryLater("500", retry_after=11),
        attempts=1,
        age_from=now,
        policy=policy,
        dead_letter=True,
        now=now,
    )
    assert redriven.verdict is Verdict.RETRY


def test_give_up_dead_letters_at_once_or_drops_without_a_dlq() -> None:
    policy = RetryPolicy()
    dead = decide(
        GiveUp("410 Gone"), attempts=1, age_from=T0, policy=policy, dead_letter=True, now=T0
    )
    assert (dead.verdict, dead.reason, dead.retry_at) == (Verdict.DEAD_LETTER, "410 Gone", None)
    dropped = decide(
        GiveUp("400"), attempts=1, age_from=T0, policy=policy, dead_letter=False, now=T0
    )
    assert dropped.verdict is Verdict.DROP
    exhausted = decide(
        RetryLater("500"),
        attempts=1,
        age_from=T0,
        policy=RetryPolicy(maximum_retry_attempts=0),
        dead_letter=False,
        now=T0,
    )
    assert exhausted.verdict is Verdict.DROP
