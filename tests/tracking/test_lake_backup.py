"""The lake in `stellwerk backup`: taken while the server writes, restored into another data
directory, the lake has every row of the backup's events once, those still waiting in the
spool included; a file rolled during the backup from rows the spool's copy does not show as
written is left out, and those rows are written again from the copy, once."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import duckdb
import pytest
from tests.cli.server import STELLWERK
from tests.conftest import RunningApp, app_running
from tests.polling import eventually
from tests.tracking.test_lake import save_lake_rule, send

from stellwerk.capability import copy_database
from stellwerk.config import load_settings
from stellwerk.storage.sqlite import backup as backup_of
from stellwerk.storage.sqlite import restore as restore_of
from stellwerk.tracking import lake_backup
from stellwerk.tracking.lake_backup import LAKE_BACKUP

pytestmark = pytest.mark.slow  # two apps, and the command line twice

EVENTS = 25
ROLL_ROWS = 10  # two files of 10 rows, and 5 rows waiting in the spool


def ids_in(lake: Path) -> list[str]:
    if not any(lake.rglob("*.parquet")):
        return []
    pattern = str(lake / "*" / "*" / "*" / "*.parquet")
    with duckdb.connect() as db:
        return [
            row[0] for row in db.execute(f"SELECT id FROM read_parquet('{pattern}')").fetchall()
        ]


async def metric(app: RunningApp, line: str) -> None:
    await eventually(lambda: app.client.get("/metrics"), accept=lambda m: line in m.text, what=line)


def cli(*args: str) -> str:
    done = subprocess.run(
        [STELLWERK, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_restored_lake_has_every_row_once_those_waiting_in_the_spool_too(
    tmp_path: Path,
) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    async with app_running(load_settings({"data_dir": str(data)})) as app:
        await save_lake_rule(app, roll_rows=ROLL_ROWS, roll_seconds=86_400)
        await send(app, [{"id": f"e{n}", "source": "shop", "type": "t"} for n in range(EVENTS)])
        await metric(app, 'stellwerk_lake_files_total{outcome="written",tenant="default"} 2.0')
        await metric(app, "stellwerk_lake_rows_waiting 5.0")
        said = cli("backup", str(backup), "--data-dir", str(data))  # while it runs
    assert "lake-spool, lake" in said
    assert "lake-spool, lake" in cli("backup", "verify", str(backup))
    assert len(list((backup / "lake").rglob("*.parquet"))) == 2
    cli("restore", str(backup), "--data-dir", str(restored))

    async with app_running(load_settings({"data_dir": str(restored)})):
        pass  # a stop writes what waits in the spool at once
    assert sorted(ids_in(restored / "lake")) == sorted(f"e{n}" for n in range(EVENTS))


async def test_a_file_rolled_during_the_backup_is_left_out_and_its_rows_written_again_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    async with app_running(load_settings({"data_dir": str(data)})) as app:
        await save_lake_rule(app, roll_rows=ROLL_ROWS, roll_seconds=86_400)
        await send(app, [{"id": f"e{n}", "source": "shop", "type": "t"} for n in range(EVENTS)])
        await metric(app, "stellwerk_lake_rows_waiting 5.0")
        loop = asyncio.get_running_loop()

        async def five_more_roll_a_file() -> None:
            more = [{"id": f"e{n}", "source": "shop", "type": "t"} for n in range(EVENTS, 30)]
            await send(app, more)
            await metric(app, 'stellwerk_lake_files_total{outcome="written",tenant="default"} 3.0')

        def copy_then_roll(source: Path, target: Path) -> None:
            copy_database(source, target)
            # Between the spool's copy and the files' copy, the writer rolls a third file of
            # the five rows the copy holds as staged and five the backup has not seen at all.
            asyncio.run_coroutine_threadsafe(five_more_roll_a_file(), loop).result(60)

        monkeypatch.setattr(lake_backup, "copy_database", copy_then_roll)
        await asyncio.to_thread(backup_of, data, backup, [LAKE_BACKUP])
    assert len(list((data / "lake").rglob("*.parquet"))) == 3
    assert len(list((backup / "lake").rglob("*.parquet"))) == 2  # the third left out
    restore_of(backup, restored)
    async with app_running(load_settings({"data_dir": str(restored)})):
        pass
    # The five rows the spool's copy held are written again, once; the five the backup's log
    # does not hold are nowhere.
    assert sorted(ids_in(restored / "lake")) == sorted(f"e{n}" for n in range(EVENTS))
