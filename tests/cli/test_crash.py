"""SIGKILL during a sustained ingest load: every event that got a 202 is in the log afterwards.

Several clients send single events and batches with unique ids to a real `stellwerk serve`
process and record the ids of every request answered 202. Once enough events are acknowledged
(counted, not timed) the server is killed with SIGKILL in mid-load. The log file must then pass
SQLite's integrity check, a restarted server must take new events (and still know the old ids as
duplicates), and reading the log back must find every acknowledged event, each exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from tests.cli.server import running_server
from tests.conftest import free_port

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import StoredEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.eventlog.sqlite.index import INDEX_FILE
from stellwerk.storage.sqlite import LOG_DIR

KILL_AFTER_EVENTS: Final = 8_000
SERVER_FLAGS: Final = ("--tenant-event-rate", "0", "--tenant-request-rate", "0")
SINGLE_CLIENTS: Final = 4
BATCH_CLIENTS: Final = 3
BATCH_SIZE: Final = 50
PATH: Final = "/v1/buses/default/events"


def event(event_id: str) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "https://crash.test/load",
        "type": "com.example.crash.tested",
        "data": {"id": event_id, "pad": "x" * 200},
    }


class Load:
    """Clients that send until their connection dies, recording what was acknowledged."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.acknowledged: set[str] = set()
        self.enough = asyncio.Event()
        self.unexpected: list[str] = []

    async def client(self, name: str, batch_size: int) -> None:
        sent = 0
        while True:
            ids = [f"{name}-{n}" for n in range(sent, sent + batch_size)]
            sent += batch_size
            if batch_size == 1:
                body = json.dumps(event(ids[0]))
                content_type = "application/cloudevents+json"
            else:
                body = json.dumps([event(i) for i in ids])
                content_type = "application/cloudevents-batch+json"
            try:
                async with self.session.post(
                    PATH, data=body, headers={"Content-Type": content_type}
                ) as answer:
                    text = await answer.text()
            except aiohttp.ClientError:
                return  # the server is gone: what it acknowledged before is recorded
            if answer.status != 202 or json.loads(text)["accepted"] != len(ids):
                self.unexpected.append(f"{answer.status}: {text}")
                return
            self.acknowledged.update(ids)
            if len(self.acknowledged) >= KILL_AFTER_EVENTS:
                self.enough.set()


async def post(session: aiohttp.ClientSession, events: list[dict[str, object]]) -> dict[str, int]:
    async with session.post(
        PATH, json=events, headers={"Content-Type": "application/cloudevents-batch+json"}
    ) as answer:
        assert answer.status == 202, await answer.text()
        result: dict[str, int] = await answer.json()
        return result


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def read_all(path: Path) -> list[StoredEvent]:
    stored: list[StoredEvent] = []
    async with SqliteEventLog(path) as log:
        while page := await log.read(
            BusRef(TenantName("default"), "default"), after=stored[-1].position if stored else 0
        ):
            stored.extend(page)
    return stored


@pytest.mark.slow
async def test_every_acknowledged_event_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, free_port(), *SERVER_FLAGS, "--log-level", "warning") as server:
        key = json.loads((data / "bootstrap.json").read_text())["ingest_key"]
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(server.url, headers=headers) as session:
            load = Load(session)
            clients = [
                *(asyncio.create_task(load.client(f"s{n}", 1)) for n in range(SINGLE_CLIENTS)),
                *(
                    asyncio.create_task(load.client(f"b{n}", BATCH_SIZE))
                    for n in range(BATCH_CLIENTS)
                ),
            ]
            finished_early = asyncio.create_task(asyncio.wait(clients))
            enough = asyncio.create_task(load.enough.wait())
            await asyncio.wait([enough, finished_early], return_when=asyncio.FIRST_COMPLETED)
            assert load.enough.is_set(), f"load ended before the kill: {load.unexpected}"
            at_kill = len(load.acknowledged)
            server.terminate(signal.SIGKILL)
            assert server.process.wait(timeout=10) == -signal.SIGKILL
            await asyncio.gather(*clients)
            finished_early.cancel()
        assert load.unexpected == []
        acknowledged = load.acknowledged
        assert len(acknowledged) >= at_kill >= KILL_AFTER_EVENTS

    # The index as the kill left it: SQLite recovers its WAL and finds nothing broken.
    assert integrity(data / LOG_DIR / INDEX_FILE) == "ok"

    some_old = sorted(acknowledged)[:3]
    with running_server(data, free_port(), *SERVER_FLAGS, "--log-level", "warning") as server:
        async with aiohttp.ClientSession(server.url, headers=headers) as session:
            fresh = await post(session, [event(f"after-restart-{n}") for n in range(5)])
            assert fresh["accepted"] == 5
            assert fresh["duplicates"] == 0
            again = await post(session, [event(i) for i in some_old])
            assert again["duplicates"] == len(some_old)
        server.terminate()
        assert server.process.wait(timeout=30) == 0

    stored = await read_all(data / LOG_DIR)
    ids = [e.id for e in stored]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    missing = acknowledged - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert {f"after-restart-{n}" for n in range(5)} <= set(ids)
    for stored_event in stored:
        body = json.loads(stored_event.body)
        assert body["id"] == stored_event.id
        assert body["data"]["id"] == stored_event.id
    assert integrity(data / LOG_DIR / INDEX_FILE) == "ok"
