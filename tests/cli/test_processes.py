"""Processes on one data directory, for real: what runs where, and who waits for whom."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest
from tests.cli.server import ServerProcess, log_problems, running_server
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def log_lines(server: ServerProcess) -> list[dict[str, object]]:
    lines = []
    for line in server.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            lines.append(record)
    return lines


def wait_for_line(server: ServerProcess, start: str, timeout: float = 60.0) -> dict[str, object]:
    """The first log line whose event starts with `start`, polled for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in log_lines(server):
            if str(record.get("event", "")).startswith(start):
                return record
        assert server.process.poll() is None, server.output()
        time.sleep(0.05)
    raise AssertionError(f"no line {start!r} within {timeout}s: {server.output()}")


def test_a_second_server_on_the_same_data_directory_waits_for_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, free_port()) as first:
        second_log = tmp_path / "second.log"
        with running_server(data, free_port(), ready=False, log_path=second_log) as second:
            waiting = wait_for_line(second, "waiting for the event log")
            assert waiting["holder_pid"] == first.process.pid
            assert httpx.get(second.url + "/readyz", timeout=5).status_code == 503
            first.terminate(signal.SIGTERM)
            assert first.process.wait(timeout=60) == 0
            second.wait_until("/readyz", 200, timeout=60)
            said = [r for r in log_lines(second) if str(r["event"]).startswith("waiting")]
            assert len(said) == 1
            second.terminate(signal.SIGTERM)
            assert second.process.wait(timeout=60) == 0
            assert log_problems(second.output()) == []
