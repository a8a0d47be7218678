"""Scheduled backups (`--backup-dir`, `--backup-interval`, `--backup-keep`) and
`stellwerk backup verify`: consistent copies, rotated, checkable without a restore."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.cli.server import run_cli, running_server
from tests.conftest import free_port

from stellwerk.app import build_app
from stellwerk.backups import PARTIAL, PREFIX, BackupMetrics, ScheduledBackups, complete_backups
from stellwerk.config import ConfigError, load_settings
from stellwerk.ops import Metrics
from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.sqlite import BackupError, restore, verify


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def make_data_dir(data_dir: Path, events: int) -> None:
    """A data directory with `events` events on the default bus, made by a real app."""
    app = build_app(load_settings({"data_dir": str(data_dir)}))
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        key = json.loads((data_dir / "bootstrap.json").read_text())["ingest_key"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            batch = [
                {"specversion": "1.0", "id": f"e{n}", "source": "urn:t", "type": "t"}
                for n in range(events)
            ]
            answer = await client.post(
                "/v1/buses/default/events",
                json=batch,
                headers={"Authorization": f"Bearer {key}"},
            )
            assert answer.json()["accepted"] == events


def scheduled(data_dir: Path, folder: Path, clock: Clock, keep: int = 2) -> ScheduledBackups:
    return ScheduledBackups(
        data_dir,
        folder,
        interval=3600,
        keep=keep,
        metrics=BackupMetrics(Metrics(process=False)),
        clock=clock,
    )


async def test_backups_are_whole_verifiable_and_rotated(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "backups"
    await make_data_dir(data, 25)
    clock = Clock()
    backups = scheduled(data, folder, clock, keep=2)
    assert backups.due_in() == 0  # none yet: at once
    taken = []
    for _ in range(3):
        taken.append(backups.take())
        clock.now += timedelta(hours=1)
    assert [t.path for t in taken[2:]] == [p for _, p in complete_backups(folder)][1:]
    assert [p for _, p in complete_backups(folder)] == [t.path for t in taken[1:]]
    assert taken[2].removed == [taken[0].path]
    assert not taken[0].path.exists()
    for t in taken[1:]:
        assert t.path.name.startswith(PREFIX)
        assert t.bytes > 0
        manifest = verify(t.path)
        assert "log" in manifest.databases
        assert "secret.key" in manifest.files
    # The newest backup is an hour old now: the next is due at once; a minute later it is not.
    assert backups.due_in() == 0
    clock.now -= timedelta(minutes=59)
    assert backups.due_in() == pytest.approx(59 * 60)

    restored = tmp_path / "restored"
    restore(taken[2].path, restored)
    app = build_app(load_settings({"data_dir": str(restored)}))
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        stored = await services.stores.event_log.read(
            BusRef(TenantName("default"), "default"), after=0, limit=100
        )
        assert [e.id for e in stored] == [f"e{n}" for n in range(25)]


async def test_a_copy_cut_short_is_never_taken_for_a_backup_and_is_cleared(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "backups"
    await make_data_dir(data, 3)
    folder.mkdir()
    leftover = folder / f".{PREFIX}20261123T020000Z{PARTIAL}"
    (leftover / "log").mkdir(parents=True)
    assert complete_backups(folder) == []
    backups = scheduled(data, folder, Clock())
    taken = backups.take()
    assert not leftover.exists()
    assert [p for _, p in complete_backups(folder)] == [taken.path]

    # A backup that fails (here: nothing to back up) leaves nothing behind either.
    later = Clock()
    later.now += timedelta(hours=1)
    failing = scheduled(tmp_path / "empty", folder, later)
    with pytest.raises(BackupError, match="holds no Stellwerk data"):
        failing.take()
    assert sorted(p.name for p in folder.iterdir()) == [taken.path.name]


async def test_verify_names_what_is_wrong(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "backups"
    await make_data_dir(data, 3)
    taken = scheduled(data, folder, Clock()).take()
    damaged = taken.path / "control.db"
    damaged.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match=r"control\.db is damaged"):
        verify(taken.path)
    damaged.unlink()
    with pytest.raises(BackupError, match=r"lists control\.db, which is missing"):
        verify(taken.path)
    with pytest.raises(BackupError, match="not a Stellwerk backup"):
        verify(tmp_path)


def test_backups_are_refused_where_they_cannot_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match="inside the data directory"):
        load_settings({"data_dir": str(data), "backup_dir": str(data / "backups")})
    with pytest.raises(ConfigError, match="deploy/backup/backup-scale-out"):
        load_settings({"backup_dir": str(tmp_path / "b"), "nats_url": "nats://127.0.0.1:4222"})
    with pytest.raises(ConfigError, match=r"--backup-interval .*outside 60\.\.2592000"):
        load_settings({"backup_interval": "10s"})
    assert load_settings({"backup_interval": "6h"}).backup_interval == 6 * 3600


@pytest.mark.slow
def test_a_server_takes_a_backup_that_verify_accepts(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "backups"
    flags = ("--backup-dir", str(folder), "--backup-interval", "1h", "--backup-keep", "3")
    with running_server(data, free_port(), *flags) as server:
        deadline = time.monotonic() + 60
        while not complete_backups(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        ((_, path),) = complete_backups(folder)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "stellwerk_backup_last_success_timestamp_seconds" in metrics
        assert 'stellwerk_volume_available_bytes{volume="backups"}' in metrics
    checked = run_cli("backup", "verify", str(path))
    assert checked.returncode == 0, checked.stderr
    assert f"{path}: a whole backup" in checked.stdout
    (path / "backup.json").write_text("{")
    refused = run_cli("backup", "verify", str(path))
    assert refused.returncode == 1
    assert "backup.json is not readable" in refused.stderr
    # Started again, it takes none: the newest is not an hour old. (The duty reports the newest
    # backup's time once it has looked, and then waits.)
    taken_at = complete_backups(folder)[0][0].timestamp()
    with running_server(data, free_port(), *flags) as server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if last_success(httpx.get(f"{server.url}/metrics").text) == taken_at:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the restarted server never looked at its backups")
        assert len(complete_backups(folder)) == 1


def last_success(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("stellwerk_backup_last_success_timestamp_seconds "):
            return float(line.split()[1])
    return 0.0
