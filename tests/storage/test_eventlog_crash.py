"""Kill -9 during sustained appends: every acknowledged event survives, and so does every dedup
decision, whether the index was up to date or far behind."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stellwerk.events import CloudEvent, encode_event
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import AppendStatus, NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.eventlog.sqlite.index import INDEX_FILE
from stellwerk.storage.sqlite import LOG_DIR

CHILD = Path(__file__).with_name("eventlog_crash_child.py")
ACKS_BEFORE_KILL = 20_000


def _acknowledged_before_kill(
    path: Path, run_entries: int, epoch_entries: int, interval: float
) -> dict[str, int]:
    """Run the child until it has acknowledged enough events, SIGKILL it, return id -> position."""
    acked: dict[str, int] = {}
    with subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            str(path),
            str(run_entries),
            str(epoch_entries),
            str(interval),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        try:
            while len(acked) < ACKS_BEFORE_KILL:
                line = child.stdout.readline()
                assert line, (
                    f"the child stopped early: {child.stderr.read() if child.stderr else ''}"
                )
                position, event_id = line.split()
                acked[event_id] = int(position)
        finally:
            child.send_signal(signal.SIGKILL)
            # The rest through the same stream. `communicate` reads the pipe's descriptor, after
            # what `readline` has buffered: once the child was ahead (under load), that began
            # mid-line, and a piece of a line was taken for a whole one.
            rest = child.stdout.read()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # Lines written before the kill are still in the pipe; a torn last line was never complete.
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):
            position, event_id = line.split()
            acked[event_id] = int(position)
    return acked


# Dedup entries all in memory when killed, or in many runs and closed epochs already; the index
# brought up to date after every group, or never (everything found again from the files at open).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("run_entries", "epoch_entries", "interval"),
    [(65_536, 4 * 1024 * 1024, 0.05), (300, 1200, 0.0), (300, 1200, 3600.0)],
)
async def test_sigkill_loses_no_acknowledged_event(
    tmp_path: Path, run_entries: int, epoch_entries: int, interval: float
) -> None:
    path = tmp_path / LOG_DIR
    acked = await asyncio.to_thread(
        _acknowledged_before_kill, path, run_entries, epoch_entries, interval
    )

    with sqlite3.connect(path / INDEX_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    found: dict[str, int] = {}
    async with SqliteEventLog(path) as log:
        for bus in ("bus0", "bus1", "bus2"):
            after = 0
            while page := await log.read(BusRef(TenantName("acme"), bus), after=after, limit=5000):
                found.update((event.id, event.position) for event in page)
                after = page[-1].position
        missing = {i: p for i, p in acked.items() if found.get(i) != p}
        assert not missing, f"{len(missing)} acknowledged events are lost or moved"
        # Every acknowledged event is still known to dedup: sent again, it is not stored again.
        ids = sorted(acked)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            again = await log.append(
                [_event(i, bus=f"bus{int(i.split('-')[0]) % 3}") for i in chunk]
            )
            assert all(r.status is AppendStatus.DUPLICATE for r in again)
            assert [r.position for r in again] == [acked[i] for i in chunk]
        # The reopened log goes on after the highest position it had handed out.
        (after_restart,) = await log.append([_event("after-restart")])
        assert after_restart.position > max(found.values())
    assert len(acked) >= ACKS_BEFORE_KILL


def _event(event_id: str, bus: str = "bus0") -> NewEvent:
    body = encode_event(CloudEvent(id=event_id, source="/crash", type="crash.test"))
    return NewEvent(TenantName("acme"), bus, event_id, "/crash", "crash.test", None, body)
