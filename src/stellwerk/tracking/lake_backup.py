"""The lake in `stellwerk backup`: the spool, and the lake's files in the data directory.

Copied while the server runs, in an order that neither loses nor doubles a row once restored
(docs/tracking.md, "Backups"). The lake's files are listed first; then the spool is copied
(SQLite's online backup), after the core's delivery queue, so every row acknowledged after
that queue's copy is either in the spool's copy or comes again from the queue's copy. Then the
files are copied: those listed before the spool's copy (their rows are written, or claimed,
in it) and those of claims the copy holds (a claim whose file is missing is written again at
the next start). A file that a claim made after the spool's copy wrote is left out: its rows
are staged in the copy, or not in it and pending in the queue's copy, so they are written
again, under the same file name when they start at the same row.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Final

from stellwerk.capability import BackupPart, copy_database

LAKE_DIR: Final = "lake"
SPOOL_DIR: Final = "lake-spool"
SPOOL_FILE: Final = "spool.db"
_FILES: Final = "*/*/*/*.parquet"  # tenant=/bus=/date=/part-....parquet


def copy_lake(data_dir: Path, destination: Path) -> list[str]:
    """`BackupPart.copy` of the lake: the entries it wrote in `destination`."""
    lake = data_dir / LAKE_DIR
    before = {p.relative_to(lake).as_posix() for p in lake.glob(_FILES)} if lake.is_dir() else set()
    spool = data_dir / SPOOL_DIR / SPOOL_FILE
    written: list[str] = []
    claimed: set[str] = set()
    if spool.exists():
        (destination / SPOOL_DIR).mkdir()
        copy_database(spool, destination / SPOOL_DIR / SPOOL_FILE)
        claimed = _files_of(destination / SPOOL_DIR / SPOOL_FILE)
        written.append(SPOOL_DIR)
    for name in sorted(before | claimed):
        if not (lake / name).exists():
            continue  # a claim not written yet, or a file deleted meanwhile
        target = destination / LAKE_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(lake / name, target)
        except FileNotFoundError:
            continue  # deleted meanwhile (an operator expiring old partitions)
    if (destination / LAKE_DIR).is_dir():
        written.append(LAKE_DIR)
    return written


def _files_of(spool: Path) -> set[str]:
    """The files the spool knows (claimed, or written within the tombstones' lifetime), as
    paths under the lake."""
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT DISTINCT partition, file FROM rows WHERE file IS NOT NULL AND file != ''"
        ).fetchall()
    finally:
        conn.close()
    return {f"{partition}/{file}" for partition, file in rows}


LAKE_BACKUP: Final = BackupPart("lake", copy_lake)
