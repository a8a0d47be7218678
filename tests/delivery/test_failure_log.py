"""Failed deliveries in the log: one warning per target per interval, with counts.

The clock is the tests' one movable clock; lines are captured as structlog events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from tests.storage.eventlog_support import MovableClock

from stellwerk.delivery.failure_log import FailureLog
from stellwerk.refs import TenantName
from stellwerk.seams import TargetKey

HOOK = TargetKey(TenantName("acme"), "default", "orders", "hook")
OTHER = TargetKey(TenantName("acme"), "default", "orders", "erp")


def failure_log(clock: MovableClock, interval: float = 60) -> FailureLog:
    return FailureLog(interval, clock=lambda: clock.now.timestamp())


def counts(line: Mapping[str, Any]) -> tuple[int, int, int]:
    return line["failed_attempts"], line["dead_lettered"], line["dropped"]


def test_the_first_failure_is_written_at_once_and_the_rest_once_per_interval() -> None:
    clock = MovableClock()
    failures = failure_log(clock)
    with structlog.testing.capture_logs() as lines:
        failures.failed(HOOK, "HTTP 503")
        for n in range(10):
            clock.advance(timedelta(seconds=5))
            failures.failed(HOOK, f"HTTP 503 #{n}")
            failures.flush()
        failures.failed(HOOK, "HTTP 404", gave_up="dead_lettered")
        assert len(lines) == 1  # 50 s later: still within the interval
        clock.advance(timedelta(seconds=10))
        failures.flush()
    first, second = lines
    assert first["log_level"] == "warning"
    assert first["event"] == "delivery_failures"
    assert (first["tenant"], first["bus"], first["rule"], first["target"]) == HOOK
    assert counts(first) == (1, 0, 0)
    assert first["last_error"] == "HTTP 503"
    assert counts(second) == (11, 1, 0)
    assert second["last_error"] == "HTTP 404"
    assert (first["seconds"], second["seconds"]) == (0.0, 60.0)  # since the line before


def test_each_target_has_its_own_interval() -> None:
    clock = MovableClock()
    failures = failure_log(clock)
    with structlog.testing.capture_logs() as lines:
        failures.failed(HOOK, "timeout")
        failures.failed(OTHER, "HTTP 500")
        failures.failed(HOOK, "timeout")
        failures.failed(OTHER, "HTTP 500", gave_up="dropped")
    assert [(line["target"], counts(line)) for line in lines] == [
        ("hook", (1, 0, 0)),
        ("erp", (1, 0, 0)),
    ]
    with structlog.testing.capture_logs() as lines:
        failures.flush(everything=True)
    assert sorted((line["target"], counts(line)) for line in lines) == [
        ("erp", (1, 0, 1)),
        ("hook", (1, 0, 0)),
    ]


def test_a_target_quiet_for_an_interval_is_written_at_once_again() -> None:
    clock = MovableClock()
    failures = failure_log(clock)
    with structlog.testing.capture_logs() as lines:
        failures.failed(HOOK, "first outage")
        clock.advance(timedelta(minutes=30))
        failures.flush()
        failures.failed(HOOK, "second outage")
    assert [line["last_error"] for line in lines] == ["first outage", "second outage"]


def test_nothing_failed_nothing_written() -> None:
    clock = MovableClock()
    failures = failure_log(clock)
    with structlog.testing.capture_logs() as lines:
        failures.flush()
        failures.flush(everything=True)
    assert lines == []


def test_a_target_gone_is_counted_without_an_attempt() -> None:
    clock = MovableClock()
    failures = failure_log(clock)
    with structlog.testing.capture_logs() as lines:
        failures.failed(HOOK, "rule has no target", attempted=False, gave_up="dead_lettered")
    assert counts(lines[0]) == (0, 1, 0)
