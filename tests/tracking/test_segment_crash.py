"""SIGKILL while the Segment collector takes a load from the real `segment-analytics-python`:
after a restart, every message the server acknowledged is on the bus exactly once.

Two senders use the SDK unchanged against a real `stellwerk serve` process: one uploads
gzipped batches of 100 through the SDK's upload function (`segment.analytics.request.post`,
what its consumer thread calls), the other makes `track` calls on a `Client` in sync mode (each
call returns only once the server answered 200). Each records the `messageId`s of what was
acknowledged. Once enough are (counted, not timed), the server is killed with SIGKILL. After
the restart the log is read beside the running server: every acknowledged message is there,
none twice. Then the SDK sends again what the kill cut short, as its retry would, and each of
those messages is there once as well, though some were stored before the kill.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError, post
from tests.cli.server import running_server
from tests.conftest import free_port

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

pytestmark = pytest.mark.slow  # starts processes

# Enough acknowledged by each sender before the kill: batches, and single calls (slower).
ENOUGH_BATCHED: Final = 1_500
ENOUGH_SINGLE: Final = 100
BATCH_SIZE: Final = 100
SOURCE: Final = "/sources/shop"


def message(message_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "u-1",
        "event": "Order Completed",
        "properties": {"total": 42.5},
        "timestamp": "2026-12-04T10:00:00.000Z",
    }


class Sender(threading.Thread):
    """Sends through the SDK until its server dies, recording what was acknowledged."""

    def __init__(self, url: str, write_key: str, prefix: str, batched: bool) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.write_key = write_key
        self.prefix = prefix
        self.batched = batched
        self.acked: set[str] = set()
        self.cut_short: list[list[str]] = []  # sent, never answered
        self.enough = threading.Event()

    def run(self) -> None:
        client = SegmentClient(self.write_key, host=self.url, sync_mode=True, max_retries=0)
        n = 0
        while not self.cut_short:
            size = BATCH_SIZE if self.batched else 1
            ids = [f"{self.prefix}{n + i}" for i in range(size)]
            n += size
            try:
                if self.batched:
                    batch = [message(i) for i in ids]
                    post(self.write_key, self.url, gzip=True, timeout=10, batch=batch)
                else:
                    client.track("u-1", "Order Completed", {"total": 42.5}, message_id=ids[0])
            except (APIError, OSError):  # requests' connection errors are OSErrors
                self.cut_short.append(ids)
                return
            self.acked.update(ids)
            if len(self.acked) >= (ENOUGH_BATCHED if self.batched else ENOUGH_SINGLE):
                self.enough.set()


async def stored_ids(data: Path) -> list[str]:
    """The ids of the default bus's events, read beside the server (which writes the log)."""
    ids: list[str] = []
    async with SqliteEventLog(data / LOG_DIR, appends=False) as log:
        after = 0
        bus = BusRef(TenantName("default"), "default")
        while page := await log.read(bus, after=after, limit=5000):
            ids.extend(event.id for event in page if event.source == SOURCE)
            after = page[-1].position
    return ids


async def test_a_kill_mid_load_loses_and_duplicates_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    with running_server(data, port) as server:
        keys = json.loads((data / "bootstrap.json").read_text())
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as client:
            made = await client.put("/v1/sources/shop", json={"kind": "segment"})
        assert made.status_code == 201, made.text
        write_key = made.json()["write_key"]
        senders = [
            Sender(server.url, write_key, "b", batched=True),
            Sender(server.url, write_key, "t", batched=False),
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            assert await asyncio.to_thread(sender.enough.wait, 60), "the load never got going"
        server.terminate(signal.SIGKILL)
        await asyncio.to_thread(server.process.wait, 30)
        for sender in senders:
            await asyncio.to_thread(sender.join, 30)
    acked = set().union(*(s.acked for s in senders))
    assert len(acked) >= ENOUGH_BATCHED + ENOUGH_SINGLE

    with running_server(data, port) as server:
        ids = await stored_ids(data)
        duplicates = [i for i, n in Counter(ids).items() if n > 1]
        assert not duplicates, f"{len(duplicates)} messages are on the bus twice"
        missing = acked - set(ids)
        assert not missing, f"{len(missing)} acknowledged messages are lost"

        # The SDK sends again what was cut short; what the kill stored of it stays one copy.
        cut_short = [ids for sender in senders for ids in sender.cut_short]
        for batch in cut_short:
            answer = await asyncio.to_thread(
                post, write_key, server.url, gzip=True, batch=list(map(message, batch))
            )
            assert answer.status_code == 200
        again = Counter(await stored_ids(data))
        assert all(again[i] == 1 for batch in cut_short for i in batch)
        assert max(again.values()) == 1
        assert set(again) == acked | {i for batch in cut_short for i in batch}
