"""The retry and failover plan on its own: driven with scripted outcomes, no I/O, a movable
clock. What the sync and async clients do on the wire is in test_send.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import repeat

import pytest

from stellwerk.client import ServerError, ServiceUnavailable, TooManyRequests, Unreachable
from stellwerk.client._exchange import (
    Answer,
    Call,
    Endpoints,
    Failure,
    Pause,
    Plan,
    Retries,
    exchange,
)
from stellwerk.client._plans import retry_after

A, B = "http://a", "http://b"
RETRIES = Retries(attempts=4, backoff=0.1, max_backoff=0.4, max_retry_after=10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(
    plan: Plan[Answer], outcomes: Iterator[Answer | Failure], done: list[Call | Pause] | None = None
) -> tuple[list[Call | Pause], Answer]:
    """Run `plan`, answering each call with the next outcome; what it did (also into `done`,
    for a plan that raises), and its result."""
    done = [] if done is None else done
    outcome: Answer | Failure | None = None
    try:
        while True:
            action = plan.send(outcome)
            done.append(action)
            outcome = next(outcomes) if isinstance(action, Call) else None
    except StopIteration as stop:
        return done, stop.value


OK = Answer(202, b"{}")
REFUSED = Failure(ConnectionRefusedError(), sent=False)
RESET = Failure(ConnectionResetError(), sent=True)


def answer(status: int, retry: float | None = None) -> Answer:
    return Answer(status, b'{"error": "X", "message": "m"}', retry)


def test_a_refused_connection_fails_over_at_once_and_later_requests_skip_it() -> None:
    endpoints = Endpoints([A, B], cooldown=30, clock=Clock())
    done, result = drive(exchange(endpoints, RETRIES, "POST", "/e"), iter([REFUSED, OK]))
    assert [a.endpoint for a in done if isinstance(a, Call)] == [A, B]
    assert not any(isinstance(a, Pause) for a in done)
    assert result is OK
    done, _ = drive(exchange(endpoints, RETRIES, "GET", "/e"), iter([OK]))
    assert [a.endpoint for a in done if isinstance(a, Call)] == [B]


def test_the_preferred_endpoint_is_asked_again_when_its_cooldown_ends() -> None:
    clock = Clock()
    endpoints = Endpoints([A, B], cooldown=30, clock=clock)
    endpoints.failed(A)
    assert endpoints.pick() == B
    clock.now += 30
    assert endpoints.pick() == A


def test_every_endpoint_is_tried_before_a_pause_and_the_attempts_are_bounded() -> None:
    endpoints = Endpoints([A, B], cooldown=30, clock=Clock())
    plan = exchange(endpoints, RETRIES, "POST", "/e")
    with pytest.raises(ServiceUnavailable) as raised:
        drive(plan, iter([REFUSED, answer(503), REFUSED, answer(503)]))
    assert raised.value.status == 503


def test_pauses_back_off_within_the_bounds() -> None:
    endpoints = Endpoints([A], cooldown=30, clock=Clock())
    retries = Retries(attempts=5, backoff=0.1, max_backoff=0.4)
    done: list[Call | Pause] = []
    with pytest.raises(Unreachable):
        drive(exchange(endpoints, retries, "GET", "/e"), repeat(REFUSED), done)
    pauses = [a.seconds for a in done if isinstance(a, Pause)]
    assert len(pauses) == 4
    assert all(0 <= p <= bound for p, bound in zip(pauses, [0.1, 0.2, 0.4, 0.4], strict=True))


def test_retry_after_is_waited_for_and_a_429_does_not_fail_over() -> None:
    endpoints = Endpoints([A, B], cooldown=30, clock=Clock())
    done, result = drive(exchange(endpoints, RETRIES, "POST", "/e"), iter([answer(429, 3), OK]))
    assert [a.endpoint for a in done if isinstance(a, Call)] == [A, A]
    assert next(a.seconds for a in done if isinstance(a, Pause)) >= 3
    assert result is OK


def test_a_retry_after_beyond_the_bound_is_raised_at_once() -> None:
    endpoints = Endpoints([A], cooldown=30, clock=Clock())
    with pytest.raises(TooManyRequests) as raised:
        drive(exchange(endpoints, RETRIES, "POST", "/e"), iter([answer(429, 60)]))
    assert raised.value.retry_after == 60


def test_a_request_that_may_have_acted_is_not_sent_again_unless_it_is_idempotent() -> None:
    endpoints = Endpoints([A], cooldown=30, clock=Clock())
    with pytest.raises(Unreachable):
        drive(exchange(endpoints, RETRIES, "POST", "/r", idempotent=False), iter([RESET]))
    with pytest.raises(ServerError) as raised:  # a 503 did not act, a 500 may have
        drive(
            exchange(endpoints, RETRIES, "POST", "/r", idempotent=False),
            iter([answer(503), answer(500)]),
        )
    assert raised.value.status == 500
    done, _ = drive(
        exchange(endpoints, RETRIES, "POST", "/r", idempotent=False), iter([REFUSED, OK])
    )
    assert len([a for a in done if isinstance(a, Call)]) == 2


def test_a_stale_kept_alive_connection_is_retried_once_without_failing_over() -> None:
    endpoints = Endpoints([A, B], cooldown=30, clock=Clock())
    stale = Failure(ConnectionResetError(), sent=True, stale=True)
    done, _ = drive(exchange(endpoints, RETRIES, "POST", "/e"), iter([stale, OK]))
    assert [a.endpoint for a in done if isinstance(a, Call)] == [A, A]
    assert endpoints.pick() == A


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after("2") == 2.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after(later)
    assert seconds is not None
    assert 25 < seconds <= 30


def test_endpoints_must_be_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        Endpoints(["127.0.0.1:8080"], cooldown=1)
    with pytest.raises(ValueError, match="at least one"):
        Endpoints([], cooldown=1)
