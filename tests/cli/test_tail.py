"""`stellwerk events tail` against a real server: events arrive live, filtered by pattern."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.cli.server import STELLWERK, running_server
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # starts processes


def test_tail_shows_new_matching_events(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, free_port()) as server:
        keys = json.loads((data / "bootstrap.json").read_text())
        ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}

        def send(i: int, type_: str) -> None:
            event = {
                "specversion": "1.0",
                "id": f"e{i}",
                "source": "urn:t",
                "type": type_,
                "data": {"n": i},
            }
            response = httpx.post(
                f"{server.url}/v1/buses/default/events", json=event, headers=ingest
            )
            assert response.status_code == 202

        send(0, "before")  # recorded before the tail starts: not shown
        tail = subprocess.Popen(
            [
                STELLWERK,
                "events",
                "tail",
                "--bus",
                "default",
                "--url",
                server.url,
                "--key",
                keys["admin_key"],
                "--pattern",
                '{"type": ["order.created"]}',
                "--max-events",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The stream's first bytes say it is attached; wait for them instead of sleeping.
            with httpx.stream(
                "GET",
                f"{server.url}/v1/buses/default/events/stream",
                headers={"Authorization": f"Bearer {keys['admin_key']}"},
                timeout=10,
            ) as probe:
                assert probe.status_code == 200
                first = next(probe.iter_lines())
                assert first.startswith(": tailing")
            # The tail process attached at least as early as its own request was answered;
            # keep sending until it has seen two matching events.
            for i in range(1, 200):
                send(i, "order.created" if i % 2 else "ignored")
                if tail.poll() is not None:
                    break
                try:
                    tail.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
            out, err = tail.communicate(timeout=30)
        finally:
            if tail.poll() is None:
                tail.kill()
        assert tail.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 2
        assert all(e["type"] == "order.created" for e in lines)
        assert lines[0]["bus"] == "default"
        assert [e["data"]["n"] for e in lines] == sorted(e["data"]["n"] for e in lines)


def test_tail_errors_are_one_line(tmp_path: Path) -> None:
    bad = subprocess.run(
        [STELLWERK, "events", "tail", "--bus", "default", "--key", "x", "--pattern", '{"a": 1}'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("stellwerk: error: --pattern: Event pattern is not valid")
    with running_server(tmp_path / "d", free_port()) as server:
        refused = subprocess.run(
            [
                STELLWERK,
                "events",
                "tail",
                "--bus",
                "default",
                "--url",
                server.url,
                "--key",
                "swk_0000000000000000_" + "x" * 43,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("stellwerk: error: 401")
