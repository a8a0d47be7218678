"""A data directory from before pipeline.db (deliveries.db and archives.db, made by that code:
see `legacy/make_v1.py`) is moved into pipeline.db on the first start, restartably."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.storage.archive_support import read_all, stored

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import ArchiveStats, ReplayCursor
from stellwerk.storage.pipeline import AdoptError, pipeline_stores
from stellwerk.storage.sqlite import (
    ARCHIVES_FILE,
    DELIVERIES_FILE,
    LOG_DIR,
    PIPELINE_FILE,
    adoption,
    backup,
    restore,
)

ACME_DEFAULT = BusRef(TenantName("acme"), "default")

ACME = TenantName("acme")
LEGACY = Path(__file__).with_name("legacy") / "v1"
CHILD = Path(__file__).with_name("adopt_child.py")
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for name in (DELIVERIES_FILE, ARCHIVES_FILE):
        shutil.copyfile(LEGACY / name, tmp_path / name)
    return tmp_path


def _files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir())


async def _everything(data_dir: Path) -> dict[str, object]:
    """What the stores answer about the legacy data, through their public faces."""
    stores = pipeline_stores(data_dir, clock=lambda: T0)
    async with stores.queue as queue, stores.archives as archives:
        leased = await queue.lease(T0 + timedelta(hours=1), 100, 30)
        return {
            "cursors": [await queue.cursor(BusRef(ACME, bus)) for bus in ("default", "audit")],
            "replay": await queue.replay_cursor(TenantName("acme"), "backfill"),
            "leased": sorted((d.position, d.target_id, d.payload[:12]) for d in leased),
            "dead": [(d.position, d.target_id, d.last_error)
                     for d in await queue.dead_letters(ACME_DEFAULT)],
            "archive_cursors": [await archives.cursor(BusRef(ACME, b))
                                for b in ("default", "audit")],
            "a1": [(e.seq, e.position) for e in await read_all(archives, "a1")],
            "stats": await archives.stats(["a1", "a2", "a3"]),
        }  # fmt: skip


EXPECTED = {
    "cursors": [5, 9],
    "replay": ReplayCursor(12, 4),
    # 3 to t1 (its payload shared with the dead 3 to t2), 4 (5 waits behind it in its group),
    # and the replay's delivery of 1 to t3.
    "leased": [
        (1, "t3", b'{"n":1}'),
        (3, "t1", b'{"specversio'),
        (4, "t1", b'{"n":4}'),
    ],
    "dead": [(2, "t1", "HTTP 410"), (3, "t2", "HTTP 404")],
    "archive_cursors": [6, 2],
    "a1": [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)],
    "stats": {"a1": ArchiveStats(5, 265), "a2": ArchiveStats(1, 53), "a3": ArchiveStats(0, 0)},
}


async def test_the_files_from_before_are_moved_into_pipeline_db(data_dir: Path) -> None:
    assert await _everything(data_dir) == EXPECTED

    assert _files(data_dir) == [PIPELINE_FILE]  # nothing else of a data directory here
    # And again, from pipeline.db alone.
    assert await _everything(data_dir) == EXPECTED


async def test_moved_stores_go_on_where_they_were(data_dir: Path) -> None:
    stores = pipeline_stores(data_dir, clock=lambda: T0)
    async with stores.queue as queue, stores.archives as archives:
        # seq 7 was handed out (and erased) in archives.db: it is not handed out again.
        await archives.archive(
            BusRef(TenantName("acme"), "audit"), 3, [("a3", stored(3, bus="audit"))]
        )
        assert [e.seq for e in await read_all(archives, "a3")] == [8]
        # The ordered group goes on: acking its head makes 5 ready.
        (head,) = [d for d in await queue.lease(T0, 100, 600) if d.position == 4]
        await queue.ack(head.id)
        (after,) = await queue.lease(T0 + timedelta(minutes=1), 100, 600)
        assert after.position == 5
        assert await queue.redrive(ACME_DEFAULT) == 2


async def test_a_move_stopped_halfway_is_done_on_the_next_start(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = adoption._copy_table

    def copy_then_fail(conn: sqlite3.Connection, name: str, here: str) -> None:
        real(conn, name, here)
        if name == "archived":  # after the archives' first two tables went in
            raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(adoption, "_copy_table", copy_then_fail)
    stores = pipeline_stores(data_dir)
    with pytest.raises(AdoptError, match=r"cannot move .*archives\.db"):
        await stores.queue.start()
    # The queue's file was moved and removed; the archives' copy rolled back whole.
    assert not (data_dir / DELIVERIES_FILE).exists()
    assert (data_dir / ARCHIVES_FILE).exists()
    with sqlite3.connect(data_dir / PIPELINE_FILE) as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (6,)
        assert conn.execute("SELECT count(*) FROM archived").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM archives").fetchone() == (0,)

    monkeypatch.undo()
    assert await _everything(data_dir) == EXPECTED
    assert not (data_dir / ARCHIVES_FILE).exists()


async def test_a_file_left_after_its_move_committed_is_removed_not_copied_again(
    data_dir: Path,
) -> None:
    assert await _everything(data_dir) == EXPECTED
    # As after a stop between the commit and the removal.
    shutil.copyfile(LEGACY / DELIVERIES_FILE, data_dir / DELIVERIES_FILE)

    assert await _everything(data_dir) == EXPECTED
    assert not (data_dir / DELIVERIES_FILE).exists()


async def test_a_move_that_would_collide_with_rows_already_there_is_refused(
    data_dir: Path,
) -> None:
    assert await _everything(data_dir) == EXPECTED
    shutil.copyfile(LEGACY / DELIVERIES_FILE, data_dir / DELIVERIES_FILE)
    with sqlite3.connect(data_dir / PIPELINE_FILE) as conn:
        conn.execute("DELETE FROM adopted_files")  # pipeline.db did not come from it

    stores = pipeline_stores(data_dir)
    with pytest.raises(AdoptError, match="UNIQUE constraint failed"):
        await stores.queue.start()
    assert (data_dir / DELIVERIES_FILE).exists()  # kept for the operator to look at


async def test_a_backup_from_before_restores_and_moves_in(data_dir: Path, tmp_path: Path) -> None:
    # A backup of a data directory from before: its manifest lists the two files.
    (data_dir / LOG_DIR).mkdir()  # a data directory has a log (this test needs no events)
    made = backup(data_dir, tmp_path / "backup")
    assert made.manifest.databases == [DELIVERIES_FILE, ARCHIVES_FILE, LOG_DIR]
    restored = tmp_path / "restored"
    restore(tmp_path / "backup", restored)

    assert await _everything(restored) == EXPECTED
    assert _files(restored) == [LOG_DIR, PIPELINE_FILE]


def _grow_archives(path: Path, copies: int) -> None:
    """Many more archived copies in the old archives.db, so that moving it takes a while."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "WITH RECURSIVE n (value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n LIMIT ?)"
            " INSERT INTO archived (aid, position, recorded_us, id, source, type, subject, body)"
            " SELECT 2, 100 + value, 1772366400000000 + value, 'x' || value, '/bulk', 't', NULL,"
            " randomblob(400) FROM n",
            (copies,),
        )
        conn.execute("UPDATE archives SET events = events + ?, bytes = bytes + ? WHERE aid = 2",
                     (copies, 400 * copies))  # fmt: skip


@pytest.mark.slow
def test_a_move_killed_midway_is_done_on_the_next_start(data_dir: Path) -> None:
    copies = 300_000
    _grow_archives(data_dir / ARCHIVES_FILE, copies)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    wal = data_dir / (PIPELINE_FILE + "-wal")
    try:
        # Killed while the copy of archives.db is under way: its WAL is past a few megabytes.
        deadline = time.monotonic() + 60
        while not (wal.exists() and wal.stat().st_size > 8_000_000):
            assert child.poll() is None, "the move finished before it could be stopped"
            assert time.monotonic() < deadline, "the move did not start"
            time.sleep(0.005)  # a poll
    finally:
        child.kill()
        child.communicate()
    assert (data_dir / ARCHIVES_FILE).exists()

    got = asyncio.run(_everything(data_dir))
    assert got["stats"]["a2"] == ArchiveStats(1 + copies, 53 + 400 * copies)  # type: ignore[index]
    assert {k: v for k, v in got.items() if k != "stats"} == {
        k: v for k, v in EXPECTED.items() if k != "stats"
    }
    assert _files(data_dir) == [PIPELINE_FILE]
