"""Reaching NATS at start and after a loss: attempts back off, and an outage is a few log lines.

The counts are taken over known numbers of attempts (or a clock the test moves), not over time.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from tests import polling
from tests.nats_support import NatsServer, free_port

from stellwerk.storage.jetstream import Connection, JetStreamUnavailable, Outage, connect


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _events(lines: list[MutableMapping[str, Any]]) -> list[str]:
    """The client's lines an operator sees (debug left out)."""
    return [
        line["event"]
        for line in lines
        if str(line["event"]).startswith("nats_") and line["log_level"] != "debug"
    ]


def test_the_wait_doubles_from_a_quarter_second_to_five_and_starts_afresh_after_an_outage() -> None:
    outage = Outage(["nats://127.0.0.1:1"], name="test", clock=FakeClock())
    waits = [outage.failed(ConnectionRefusedError(111, "refused")) for _ in range(8)]
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    outage.ended("127.0.0.1:4222")
    assert outage.failed(ConnectionRefusedError(111, "refused")) == 0.25


def test_an_hour_away_is_one_line_a_reminder_a_minute_and_one_line_back() -> None:
    clock = FakeClock()
    outage = Outage(["nats://127.0.0.1:1"], name="test", clock=clock)
    with structlog.testing.capture_logs() as lines:
        attempts = 0
        began = clock.now
        while clock.now - began < 3600:
            clock.now += outage.failed(OSError("Connection refused"))
            attempts += 1
        outage.ended("127.0.0.1:4222")
    events = _events(lines)
    assert attempts > 700  # at 0.25 s without backoff it would be 14,400
    assert events[0] == "nats_unreachable"
    assert events[-1] == "nats_reachable"
    reminders = events.count("nats_still_unreachable")
    assert 55 <= reminders <= 60
    assert len(events) == reminders + 2
    assert lines[-1]["attempts"] == attempts


async def test_a_start_without_nats_gives_up_after_its_time_with_one_line_and_the_reason() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    outage = Outage([url], name="test")
    with structlog.testing.capture_logs() as lines, pytest.raises(ConnectionError) as raised:
        await connect([url], name="test", outage=outage, within=2.0)
    assert outage.attempts >= 2
    assert _events(lines) == ["nats_unreachable"]
    message = str(raised.value)
    assert url in message
    assert f"{outage.attempts} attempts" in message
    assert "Errno 111" in message  # the last error, as the system said it


async def test_a_store_connection_that_cannot_reach_nats_fails_its_start_as_unavailable() -> None:
    conn = Connection(f"nats://127.0.0.1:{free_port()}", request_timeout=1.0, name="test")
    with pytest.raises(JetStreamUnavailable, match="cannot reach NATS"):
        await conn.open(within=0.5)
    await conn.close()


async def test_a_server_away_for_several_attempts_costs_two_lines_and_the_waits_grow(
    nats_server: NatsServer,
) -> None:
    outage = Outage([nats_server.url], name="test")
    nc = await connect([nats_server.url], name="test", outage=outage, connect_timeout=1)
    try:
        with structlog.testing.capture_logs() as lines:
            nats_server.kill()
            await polling.eventually(lambda: outage.attempts >= 4)
            assert nc.options["reconnect_time_wait"] >= 2.0
            await nats_server.start_async()
            # nats-py says it is connected before it calls back to say it reconnected, and the
            # line is logged in that callback: wait for the outage to end, not the connection.
            await polling.eventually(lambda: nc.is_connected and not outage.ongoing)
        assert _events(lines) == ["nats_unreachable", "nats_reachable"], lines
        assert lines[-1]["attempts"] >= 4
    finally:
        await nc.close()
