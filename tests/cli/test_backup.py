"""`stellwerk backup` of a live server and `stellwerk restore` into a new data directory."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from tests.cli.server import STELLWERK, running_server
from tests.conftest import free_port
from tests.polling import serve_in_thread

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.eventlog.sqlite.index import INDEX_FILE
from stellwerk.storage.sqlite import LOG_DIR

pytestmark = pytest.mark.slow  # starts processes

FLAGS = ("--allow-private-targets", "--tenant-event-rate", "0", "--tenant-request-rate", "0")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STELLWERK, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_backup_while_ingesting_and_restore(tmp_path: Path) -> None:
    data, copy, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    acknowledged: list[str] = []
    stop = threading.Event()
    with running_server(data, free_port(), *FLAGS) as server:
        keys = json.loads((data / "bootstrap.json").read_text())
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        # A rule whose receiver does not exist yet: its deliveries wait in the queue.
        dead_port = free_port()
        rule = {
            "pattern": {"type": ["load"]},
            "targets": [{"id": "hook", "type": "http", "url": f"http://127.0.0.1:{dead_port}/"}],
        }
        assert (
            httpx.put(
                f"{server.url}/v1/buses/default/rules/r", json=rule, headers=admin
            ).status_code
            == 201
        )
        archive = {"pattern": {"type": ["load"]}, "retention_days": 0}
        assert (
            httpx.put(
                f"{server.url}/v1/buses/default/archives/all", json=archive, headers=admin
            ).status_code
            == 201
        )

        def ingest() -> None:
            headers = {"Authorization": f"Bearer {keys['ingest_key']}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    batch = [
                        {"specversion": "1.0", "id": f"e{n + i}", "source": "urn:t", "type": "load"}
                        for i in range(20)
                    ]
                    if client.post("/v1/buses/default/events", json=batch).status_code == 202:
                        acknowledged.extend(e["id"] for e in batch)
                    n += 20

        sender = threading.Thread(target=ingest)
        sender.start()
        try:
            while len(acknowledged) < 200 and sender.is_alive():
                sender.join(0.05)
            assert sender.is_alive(), "the ingesting thread stopped"
            before_backup = set(acknowledged)
            made = cli("backup", str(copy), "--data-dir", str(data))
        finally:
            stop.set()
            sender.join()
        assert made.returncode == 0, made.stderr
        assert len(acknowledged) > len(before_backup), "ingestion went on during the backup"

    assert stat_mode(copy / "secret.key") == 0o600
    manifest = json.loads((copy / "backup.json").read_text())
    assert manifest["databases"] == ["pipeline.db", "log", "control.db"]

    refused = cli("restore", str(copy), "--data-dir", str(data))
    assert refused.returncode == 1
    assert "must be an empty directory" in refused.stderr
    done = cli("restore", str(copy), "--data-dir", str(restored))
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(restored / LOG_DIR / INDEX_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # The restored platform: same keys and rules, every event acknowledged before the backup,
    # and routing resumes: the waiting deliveries reach the receiver once it is there.
    received: set[str] = set()
    arrived = threading.Condition()
    receiver = start_receiver(dead_port, received, arrived)
    try:
        with running_server(restored, free_port(), *FLAGS) as server:
            rules = httpx.get(f"{server.url}/v1/buses/default/rules", headers=admin).json()
            assert [r["name"] for r in rules["rules"]] == ["r"]
            with arrived:
                assert arrived.wait_for(lambda: before_backup <= received, 90), (
                    f"{len(before_backup - received)} events of the backup were never delivered"
                )
            # The archiver resumes from its restored cursor: every event of the restored log
            # ends up in the archive, once.
            archived = 0
            deadline = time.monotonic() + 60
            while archived < len(before_backup) and time.monotonic() < deadline:
                url = f"{server.url}/v1/buses/default/archives/all"
                archived = httpx.get(url, headers=admin).json()["events"]
                time.sleep(0.05)  # poll interval
            in_log = asyncio.run(_count_events(restored / LOG_DIR))
            assert len(before_backup) <= archived <= in_log
    finally:
        receiver.shutdown()
        receiver.server_close()


async def _count_events(log_dir: Path) -> int:
    """The events of the default bus, read beside the running server as another process would."""
    count, after = 0, 0
    async with SqliteEventLog(log_dir, appends=False) as log:
        while page := await log.read(
            BusRef(TenantName("default"), "default"), after=after, limit=1000
        ):
            count += len(page)
            after = page[-1].position
    return count


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def start_receiver(
    port: int, received: set[str], arrived: threading.Condition
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with arrived:
                received.add(json.loads(body)["id"])
                arrived.notify_all()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    serve_in_thread(server)
    return server


def test_backup_and_restore_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    empty = cli("backup", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nothing"))
    assert empty.returncode == 1
    assert "holds no Stellwerk data" in empty.stderr
    not_backup = cli("restore", str(tmp_path), "--data-dir", str(tmp_path / "new"))
    assert not_backup.returncode == 1
    assert "is not a Stellwerk backup" in not_backup.stderr
