"""SIGKILL of a routing process: after a restart every event is routed exactly once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.routing.router_crash_child import rules
from tests.storage.eventlog_support import MovableClock

from stellwerk.events import CloudEvent, encode_event
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing import Router
from stellwerk.seams import NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

pytestmark = pytest.mark.slow  # starts processes

CHILD = Path(__file__).with_name("router_crash_child.py")
EVENTS = 20_000
BATCHES_BEFORE_KILL = 20


def _event(number: int) -> NewEvent:
    body = encode_event(
        CloudEvent(id=f"e{number}", source="/crash", type="crash", data={"even": number % 2 == 0})
    )
    return NewEvent(TenantName("acme"), "crash", f"e{number}", "/crash", "crash", None, body)


def _route_until_killed(data_dir: Path) -> int:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported = 0
    try:
        for _ in range(BATCHES_BEFORE_KILL):
            line = child.stdout.readline()
            assert line, f"the child stopped early: {child.stderr.read() if child.stderr else ''}"
            reported = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    return reported


async def test_sigkill_while_routing_neither_repeats_nor_skips(tmp_path: Path) -> None:
    clock = MovableClock()
    async with SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log:
        for start in range(0, EVENTS, 1000):
            await log.append([_event(n) for n in range(start, start + 1000)])
        last = await log.last_position(BusRef(TenantName("acme"), "crash"))

    reported = _route_until_killed(tmp_path)

    with sqlite3.connect(tmp_path / PIPELINE_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        cursor = await queue.cursor(BusRef(TenantName("acme"), "crash"))
        # Killed in the middle: at least what it reported, and not yet everything.
        assert reported <= cursor < last
        ruleset = rules()
        router = Router(
            log,
            queue,
            lambda bus: ruleset,
            lambda: [BusRef(TenantName("acme"), "crash")],
            batch=500,
        )
        await router.run(burst=True)
        assert await queue.cursor(BusRef(TenantName("acme"), "crash")) == last
        leased = await queue.lease(clock(), 100_000, 60)
    got = Counter((d.event_id, d.rule, d.target_id) for d in leased)
    expected: Counter[tuple[str, str, str]] = Counter()
    for n in range(EVENTS):
        expected.update([(f"e{n}", "all", "a1"), (f"e{n}", "all", "a2")])
        if n % 2 == 0:
            expected[(f"e{n}", "even", "e")] += 1
    assert got == expected
