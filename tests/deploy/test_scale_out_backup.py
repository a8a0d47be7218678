"""deploy/backup/scale_out_backup.py: a scaled-out Stellwerk backed up while it runs (JetStream
snapshots of every stream, pg_dump) and restored into an empty nats-server and database comes
back with its rules, events, archive and waiting deliveries."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.conftest import POSTGRES_ADMIN_DSN
from tests.deploy.tools import DEPLOY, tool
from tests.e2e.scale_out import ScaleOut, keys_of, load_batch, metric_total
from tests.nats_support import NatsServer, free_port
from tests.polling import wait_until

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SCRIPT = DEPLOY / "backup" / "scale_out_backup.py"
EVENTS = 120


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def empty_database(postgres_available: None) -> Iterator[str]:
    name = f"stellwerk_restore_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def stored_ids(nats_url: str) -> list[str]:
    ids: list[str] = []
    async with JetStreamEventLog(nats_url) as log:
        after = 0
        while page := await log.read(
            BusRef(TenantName("default"), "default"), after=after, limit=1000
        ):
            ids.extend(e.id for e in page)
            after = page[-1].position
    return ids


def test_a_running_installation_is_backed_up_and_restored_into_an_empty_one(
    nats_server: NatsServer, postgres_url: str, empty_database: str, tmp_path: Path
) -> None:
    tool("pg_dump")
    tool("pg_restore")
    source = ScaleOut(nats_server.url, postgres_url, tmp_path / "source")
    folder = tmp_path / "backup"
    dead_target = f"http://127.0.0.1:{free_port()}/hook"
    with source.role("all") as server:
        keys = keys_of(server)
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        rule = {
            "pattern": {"type": ["load"]},
            "targets": [{"id": "hook", "type": "http", "url": dead_target}],
        }
        url = f"{server.url}/v1/buses/default"
        assert httpx.put(f"{url}/rules/r", json=rule, headers=admin).status_code == 201
        archive = {"pattern": {"type": ["load"]}, "retention_days": 0}
        assert httpx.put(f"{url}/archives/all", json=archive, headers=admin).status_code == 201
        ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
        sent = httpx.post(f"{url}/events", json=load_batch(0, EVENTS), headers=ingest)
        assert sent.status_code == 202
        wait_until(
            lambda: httpx.get(f"{url}/archives/all", headers=admin).json()["events"] == EVENTS,
            within=60,
        )
        made = script(
            "backup", str(folder), "--nats-url", source.nats_url, "--database-url", postgres_url
        )
        assert made.returncode == 0, made.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    names = [s["name"] for s in manifest["streams"]]
    assert names[-1] == "stellwerk_events_default"  # the log last, after what points into it
    assert names.index("stellwerk_archived") == len(names) - 2
    assert "KV_stellwerk_leases" not in names
    assert "stellwerk_deliveries" in names

    target = NatsServer(tmp_path / "nats-restored")
    target.start()
    try:
        refused = script(
            "restore", str(folder), "--nats-url", nats_server.url, "--database-url", empty_database
        )
        assert refused.returncode == 1
        assert "has these streams already" in refused.stderr
        done = script(
            "restore", str(folder), "--nats-url", target.url, "--database-url", empty_database
        )
        assert done.returncode == 0, done.stderr
        assert sorted(asyncio.run(stored_ids(target.url))) == sorted(f"e{n}" for n in range(EVENTS))
        restored = ScaleOut(target.url, empty_database, tmp_path / "restored")
        restored.secret_key = source.secret_key
        with restored.role("all") as server:
            url = f"{server.url}/v1/buses/default"
            rules = httpx.get(f"{url}/rules", headers=admin).json()["rules"]
            assert [r["name"] for r in rules] == ["r"]
            assert httpx.get(f"{url}/archives/all", headers=admin).json()["events"] == EVENTS
            # The deliveries still wait for their target, none lost, none routed twice.
            wait_until(
                lambda: metric_total(server, "stellwerk_delivery_queue_depth") >= EVENTS,
                within=30,
            )
            assert metric_total(server, "stellwerk_delivery_queue_depth") == EVENTS
    finally:
        target.kill()


def test_the_script_says_what_it_needs() -> None:
    missing = script("backup", "/tmp/nowhere", "--nats-url", "", "--database-url", "")
    assert missing.returncode == 2
    assert "--nats-url and --database-url" in missing.stderr
