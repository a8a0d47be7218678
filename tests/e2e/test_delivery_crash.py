"""SIGKILL the server while it delivers: every acknowledged event still reaches the receiver.

The receiver is a real HTTP server in a thread of the test; the server is a real process. After
the kill and a restart, every event that got a 202 arrives at least once; duplicates (deliveries
whose ack the kill prevented) are counted and reported, as at-least-once delivery allows.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from tests.cli.server import running_server
from tests.conftest import free_port
from tests.e2e.receiving import Received, start_receiver

pytestmark = pytest.mark.slow  # starts processes

EVENTS = 3000
BATCH = 100


def test_kill_during_delivery_loses_nothing(tmp_path: Path) -> None:
    received = Received()
    receiver = start_receiver(received)
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    data = tmp_path / "data"
    acknowledged: list[str] = []
    flags = ("--allow-private-targets", "--tenant-event-rate", "0", "--tenant-request-rate", "0")
    try:
        with running_server(data, free_port(), *flags) as server:
            keys = json.loads((data / "bootstrap.json").read_text())
            admin = {"Authorization": f"Bearer {keys['admin_key']}"}
            rule = {
                "pattern": {"type": ["load"]},
                "targets": [{"id": "hook", "type": "http", "url": url, "concurrency": 8}],
            }
            assert (
                httpx.put(
                    f"{server.url}/v1/buses/default/rules/all", json=rule, headers=admin
                ).status_code
                == 201
            )
            ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
            with httpx.Client(base_url=server.url, headers=ingest, timeout=30) as client:
                for start in range(0, EVENTS, BATCH):
                    batch = [
                        {
                            "specversion": "1.0",
                            "id": f"e{n}",
                            "source": "urn:load",
                            "type": "load",
                            "data": {"n": n},
                        }
                        for n in range(start, start + BATCH)
                    ]
                    response = client.post("/v1/buses/default/events", json=batch)
                    assert response.status_code == 202, response.text
                    acknowledged.extend(f"e{n}" for n in range(start, start + BATCH))
            # Kill once delivery is well under way but not done (decided by counting).
            assert received.wait_for(lambda r: len(r.ids) >= 300, 60)
            server.terminate(signal.SIGKILL)
            server.process.wait(timeout=30)
            delivered_before = len(received.ids)
        assert delivered_before < EVENTS, "delivery finished before the kill; raise EVENTS"

        with running_server(data, free_port(), *flags):
            everything = set(acknowledged)
            complete = received.wait_for(lambda r: everything <= set(r.ids), 120)
            missing = everything - set(received.ids)
            assert complete, (
                f"{len(missing)} acknowledged events never arrived, e.g. {sorted(missing)[:5]}"
            )
        duplicates = sum(count - 1 for count in received.ids.values())
        print(f"delivered before kill: {delivered_before}; duplicates after restart: {duplicates}")
        assert duplicates <= EVENTS
    finally:
        receiver.shutdown()
        receiver.server_close()
