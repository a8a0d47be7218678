"""Ingest on a data directory that fills up or turns read-only, with a real server on a real
small file system: 503 with the reason and `Retry-After`, never a 500; nothing acknowledged is
lost; once there is room again the same process takes events again."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cli.server import ServerProcess, running_server
from tests.conftest import free_port
from tests.disks import ext4, tmpfs
from tests.polling import wait_until

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

pytestmark = pytest.mark.slow

PADDING = "x" * 900


def event(n: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"e{n}",
        "source": "urn:disk-test",
        "type": "t",
        "data": {"n": n, "padding": PADDING},
    }


class Sender:
    def __init__(self, server: ServerProcess) -> None:
        bootstrap = json.loads((server.data_dir / "bootstrap.json").read_text())
        self.tenant = TenantName(bootstrap["tenant"])
        self.client = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {bootstrap['ingest_key']}"},
            timeout=30,
        )
        self.acknowledged: set[str] = set()

    def send(self, n: int) -> httpx.Response:
        answer = self.client.post("/v1/buses/default/events", json=event(n))
        assert answer.status_code in (202, 503), answer.text
        if answer.status_code == 202:
            self.acknowledged.add(f"e{n}")
        return answer

    def send_until_refused(self, first: int) -> tuple[httpx.Response, int]:
        for n in range(first, first + 2000):
            answer = self.send(n)
            if answer.status_code == 503:
                return answer, n + 1
        raise AssertionError("ingest never answered 503 on a full data directory")

    def send_until_taken(self, n: int) -> None:
        wait_until(lambda: self.send(n).status_code == 202, what="ingest takes events again")


def stored_ids(data_dir: Path, tenant: TenantName) -> list[str]:
    """Every event in the log, read by a log of our own once the server has stopped."""

    async def read() -> list[str]:
        found: list[str] = []
        async with SqliteEventLog(data_dir / LOG_DIR) as log:
            after = 0
            while batch := await log.read(BusRef(tenant, "default"), after=after, limit=1000):
                found += [e.id for e in batch]
                after = batch[-1].position
        return found

    return asyncio.run(read())


def stop(server: ServerProcess, sender: Sender) -> None:
    sender.client.close()
    server.terminate(signal.SIGTERM)
    server.process.wait(timeout=60)


def assert_refused_with(answer: httpx.Response, code: str, message: str) -> None:
    assert answer.status_code == 503
    assert answer.json() == {"error": code, "message": message}
    assert int(answer.headers["retry-after"]) >= 1


def test_a_full_data_directory_answers_503_loses_nothing_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", size="16m") as disk:
        with running_server(disk.path, free_port()) as server:
            sender = Sender(server)
            for n in range(10):
                assert sender.send(n).status_code == 202
            disk.fill()
            refused, n = sender.send_until_refused(100)
            assert_refused_with(refused, "DataDirectoryFull", "the data directory is full")
            ready = server.wait_until("/readyz", 503)
            assert ready.json() == {
                "status": "unavailable",
                "reason": "event log unavailable: the data directory is full",
            }

            disk.free()
            sender.send_until_taken(n)
            server.wait_until("/readyz", 200)
            assert sender.send(0).json()["duplicates"] == 1
            stop(server, sender)
        assert "Traceback" not in server.output()
        assert sorted(stored_ids(disk.path, sender.tenant)) == sorted(sender.acknowledged)


def test_a_data_directory_that_turns_read_only_answers_503_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Linux lets no file system that an error made read-only be written again before it is
    unmounted and checked, so here recovery is a restart once the disk is repaired."""
    # The control plane elsewhere: this is about the log.
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    with ext4(tmp_path / "data") as disk:
        with running_server(disk.path, free_port(), "--database-url", database_url) as server:
            sender = Sender(server)
            for n in range(10):
                assert sender.send(n).status_code == 202
            disk.turn_read_only()
            answer = sender.send(100)
            assert_refused_with(answer, "DataDirectoryReadOnly", "the data directory is read-only")
            ready = server.wait_until("/readyz", 503)
            assert (
                ready.json()["reason"] == "event log unavailable: the data directory is read-only"
            )
            stop(server, sender)
        assert "Traceback" not in server.output()
        disk.repair()
        with running_server(disk.path, free_port(), "--database-url", database_url) as server:
            again = Sender(server)
            assert again.send(100).status_code == 202
            assert again.send(0).json()["duplicates"] == 1
            stop(server, again)
        assert sorted(stored_ids(disk.path, sender.tenant)) == sorted(
            sender.acknowledged | {"e100"}
        )
