"""`stellwerk replay start|status|cancel` against a real server."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.cli.server import STELLWERK, running_server
from tests.conftest import free_port
from tests.e2e.receiving import Received, start_receiver
from tests.polling import wait_until

from stellwerk.events import format_rfc3339

pytestmark = pytest.mark.slow  # starts processes

EVENTS = 150
LONG_REPLAY_EVENTS = 3000


def replay(*args: str, url: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STELLWERK, "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"STELLWERK_URL": url, "STELLWERK_KEY": key, "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_start_wait_status_cancel_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    since = format_rfc3339(datetime.now(UTC) - timedelta(seconds=1))
    receiver = start_receiver(Received())
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    flags = ("--replay-rate", "50", "--allow-private-targets")
    try:
        run_commands(data, since, hook, flags)
    finally:
        receiver.shutdown()
        receiver.server_close()


def run_commands(data: Path, since: str, hook: str, flags: tuple[str, ...]) -> None:
    with running_server(data, free_port(), *flags) as server:
        keys = json.loads((data / "bootstrap.json").read_text())
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        with httpx.Client(base_url=server.url, headers=admin, timeout=30) as client:
            assert client.put("/v1/buses/default/archives/all", json={}).status_code == 201
            events = [
                {"specversion": "1.0", "id": f"e{n}", "source": "urn:t", "type": "t"}
                for n in range(EVENTS)
            ]
            ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
            assert client.post("/v1/buses/default/events", json=events, headers=ingest).is_success
            deadline = time.monotonic() + 30
            while client.get("/v1/buses/default/archives/all").json()["events"] < EVENTS:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # An HTTP receiver, not a log target: the server's output goes to a pipe nobody reads.
            target = {"id": "hook", "type": "http", "url": hook}
            rule = {"pattern": {"type": ["t"]}, "targets": [target]}
            assert client.put("/v1/buses/default/rules/logged", json=rule).is_success
        end = format_rfc3339(datetime.now(UTC))
        window = ["--archive", "all", "--start", since, "--end", end]
        key = keys["admin_key"]

        done = replay(
            "start", "one", *window, "--rule", "logged", "--wait", url=server.url, key=key
        )
        assert done.returncode == 0, done.stderr
        assert "replay one: completed, 150 of 150 events" in done.stdout
        assert "150/150" in done.stdout  # the progress bar's count

        shown = replay("status", "one", url=server.url, key=key)
        assert shown.returncode == 0, shown.stderr
        assert "completed, 150 of 150 events" in shown.stdout
        as_json = json.loads(replay("status", "one", "--json", url=server.url, key=key).stdout)
        assert (as_json["state"], as_json["rules"]) == ("completed", ["logged"])

        # 3,150 events at 50/s, about a minute: cancelled well before its end, however long
        # the command line takes to start on a loaded machine (150 events, 3 s, once were not).
        more = EVENTS + LONG_REPLAY_EVENTS
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
            for first in range(EVENTS, more, 1000):
                batch = [
                    {"specversion": "1.0", "id": f"e{n}", "source": "urn:t", "type": "t"}
                    for n in range(first, min(first + 1000, more))
                ]
                sent = client.post("/v1/buses/default/events", json=batch, headers=ingest)
                assert sent.is_success, sent.text
            archive = "/v1/buses/default/archives/all"
            wait_until(
                lambda: client.get(archive, headers=admin).json()["events"],
                what=f"{more} events archived",
                within=30,
                accept=lambda archived: archived >= more,
            )
        longer = ["--archive", "all", "--start", since, "--end", format_rfc3339(datetime.now(UTC))]
        started = replay("start", "two", *longer, url=server.url, key=key)
        assert started.returncode == 0, started.stderr
        assert "replay two: running" in started.stdout
        cancelled = replay("cancel", "two", url=server.url, key=key)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.startswith("replay two: cancelled after")

        # Errors: one line on stderr, exit code 2.
        for args, message in [
            (("status", "nope"), "404: replay 'nope' does not exist"),
            (("start", "one", *window), "409: replay 'one' already exists"),
            (("cancel", "one"), "409: replay 'one' has completed already"),
            (("start", "x", "--archive", "all", "--start", "soon", "--end", end), "RFC 3339"),
        ]:
            failed = replay(*args, url=server.url, key=key)
            assert failed.returncode == 2, (args, failed.stdout, failed.stderr)
            assert failed.stderr.count("\n") == 1
            assert failed.stderr.startswith("stellwerk: error: ")
            assert message in failed.stderr
    unreachable = replay("status", "one", url=server.url, key=key)
    assert unreachable.returncode == 2
    assert "cannot reach" in unreachable.stderr
