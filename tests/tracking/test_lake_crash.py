"""SIGKILL while a lake target is taking a load: after a restart, every event that got a 202 is
in the lake exactly once, and `stellwerk lake query` says so.

A client sends batches with unique ids to a real `stellwerk serve` process and records the
ids of every batch answered 202. Once enough are acknowledged (counted, not timed), the server
is killed with SIGKILL: deliveries are in flight, rows are staged, files are being rolled
(every 40 rows or 0.2 s). The restarted server (leases of 2 s, so the deliveries whose acks
were lost come back at once) must bring the lake to exactly the acknowledged ids, none twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from tests.cli.server import STELLWERK, running_server
from tests.conftest import free_port
from tests.polling import wait_until

pytestmark = pytest.mark.slow  # starts processes

KILL_AFTER_EVENTS: Final = 1_500
BATCH_SIZE: Final = 25
FLAGS: Final = ("--delivery-lease-seconds", "2")


class Sender(threading.Thread):
    """Sends batches until its connection dies, recording what was acknowledged."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.key = key
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.enough = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            n = 0
            while True:
                ids = [f"e{n + i}" for i in range(BATCH_SIZE)]
                n += BATCH_SIZE
                self.sent.update(ids)
                batch = [
                    {"specversion": "1.0", "id": i, "source": "load", "type": "t", "data": {}}
                    for i in ids
                ]
                try:
                    answer = client.post("/v1/buses/default/events", json=batch)
                except httpx.TransportError:
                    return
                if answer.status_code == 202:
                    self.acked.update(ids)
                if len(self.acked) >= KILL_AFTER_EVENTS:
                    self.enough.set()


def lake_query(url: str, key: str, sql: str) -> Any:
    done = subprocess.run(
        [STELLWERK, "lake", "query", "--json", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env={"STELLWERK_URL": url, "STELLWERK_KEY": key, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_kill_mid_load_neither_loses_nor_duplicates_an_acknowledged_row(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    with running_server(data, port, *FLAGS) as server:
        keys = json.loads((data / "bootstrap.json").read_text())
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        rule = {
            "pattern": {"source": ["load"]},
            "targets": [
                {
                    "id": "lake",
                    "type": "lake",
                    "parameters": {"roll_rows": 40, "roll_seconds": 0.2},
                }
            ],
        }
        saved = httpx.put(f"{server.url}/v1/buses/default/rules/lake", headers=admin, json=rule)
        assert saved.status_code == 201, saved.text
        sender = Sender(server.url, keys["ingest_key"])
        sender.start()
        assert sender.enough.wait(60), "the load never got going"
        server.terminate(signal.SIGKILL)
        server.process.wait(timeout=30)
        sender.join(30)
    assert len(sender.acked) >= KILL_AFTER_EVENTS

    with running_server(data, port, *FLAGS) as server:
        sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events"
        wait_until(
            lambda: lake_query(server.url, keys["admin_key"], sql)["rows"][0],
            what="every acknowledged event in the lake",
            within=60,
            accept=lambda row: row[1] >= len(sender.acked),
        )
        answer = lake_query(server.url, keys["admin_key"], "SELECT id FROM events")
    ids = [row[0] for row in answer["rows"]]
    assert len(ids) == len(set(ids)), "an event is in the lake twice"
    assert set(ids) >= sender.acked, "an acknowledged event is missing"
    # Besides those, only events of the batch cut short by the kill (stored, never answered).
    assert set(ids) <= sender.sent
    files = list((data / "lake").rglob("*.parquet"))
    assert len(files) > 1
