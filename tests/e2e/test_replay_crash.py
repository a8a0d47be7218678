"""SIGKILL the server during a replay: after a restart the replay resumes from its cursor and
finishes, and the receiver sees each replayed event at least once.

The server is a real process with replays held to 300 events/s, so the kill comes mid-way; the
receiver is a real HTTP server in a thread of the test. Duplicates (deliveries whose ack the kill
prevented) are counted and reported, as at-least-once delivery allows.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.cli.server import ServerProcess, running_server
from tests.conftest import free_port
from tests.e2e.receiving import Received, start_receiver
from tests.polling import wait_until

from stellwerk.events import format_rfc3339

pytestmark = pytest.mark.slow  # starts processes

EVENTS = 1500
BATCH = 100
FLAGS = (
    "--allow-private-targets",
    "--tenant-event-rate",
    "0",
    "--tenant-request-rate",
    "0",
    "--replay-rate",
    "300",
)


def status(server: ServerProcess, admin: dict[str, str]) -> dict[str, object]:
    response = httpx.get(f"{server.url}/v1/replays/crash", headers=admin, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_kill_during_a_replay_resumes_it_and_loses_nothing(tmp_path: Path) -> None:
    received = Received()
    receiver = start_receiver(received)
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    data = tmp_path / "data"
    since = datetime.now(UTC) - timedelta(seconds=1)
    try:
        with running_server(data, free_port(), *FLAGS) as server:
            keys = json.loads((data / "bootstrap.json").read_text())
            admin = {"Authorization": f"Bearer {keys['admin_key']}"}
            with httpx.Client(base_url=server.url, timeout=30) as client:
                archive = client.put("/v1/buses/default/archives/all", json={}, headers=admin)
                assert archive.status_code == 201, archive.text
                ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
                for start in range(0, EVENTS, BATCH):
                    batch = [
                        {"specversion": "1.0", "id": f"e{n}", "source": "urn:load", "type": "load"}
                        for n in range(start, start + BATCH)
                    ]
                    response = client.post("/v1/buses/default/events", json=batch, headers=ingest)
                    assert response.status_code == 202, response.text

                def all_archived() -> bool:
                    shown = client.get("/v1/buses/default/archives/all", headers=admin).json()
                    return bool(shown["events"] == EVENTS)

                wait_until(all_archived, within=60)
                # The rule comes after the events: only the replay delivers them.
                rule = {
                    "pattern": {"type": ["load"]},
                    "targets": [{"id": "hook", "type": "http", "url": url}],
                }
                assert client.put(
                    "/v1/buses/default/rules/backfill", json=rule, headers=admin
                ).is_success
                replay = {
                    "name": "crash",
                    "archive": "all",
                    "bus": "default",
                    "start": format_rfc3339(since),
                    "end": format_rfc3339(datetime.now(UTC)),
                }
                created = client.post("/v1/replays", json=replay, headers=admin)
                assert created.status_code == 201, created.text
            # Kill once the replay is well under way but not done (decided by counting).
            assert received.wait_for(lambda r: len(r.ids) >= 200, 60)
            server.terminate(signal.SIGKILL)
            server.process.wait(timeout=30)
            delivered_before = len(received.ids)
        assert delivered_before < EVENTS, "the replay finished before the kill; raise EVENTS"

        with running_server(data, free_port(), *FLAGS) as server:
            everything = {f"e{n}" for n in range(EVENTS)}
            complete = received.wait_for(lambda r: everything <= set(r.ids), 120)
            missing = everything - set(received.ids)
            assert complete, (
                f"{len(missing)} replayed events never arrived, e.g. {sorted(missing)[:5]}"
            )
            wait_until(lambda: status(server, admin)["state"] == "completed", within=60)
            final = status(server, admin)
            assert (final["replayed"], final["total"]) == (EVENTS, EVENTS)
        assert received.replay_names == {"crash"}
        duplicates = sum(count - 1 for count in received.ids.values())
        print(f"replayed before kill: {delivered_before}; duplicates after restart: {duplicates}")
        # Resumed from its cursor, not from the start: only deliveries in flight at the kill
        # (unacknowledged) come again, never a second replay of the window.
        assert duplicates < delivered_before
    finally:
        receiver.shutdown()
        receiver.server_close()
