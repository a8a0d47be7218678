"""The one-time move of a log kept in SQLite (`events.db`, before the log files) into files.

The old log kept each segment of events as a row with their bodies. Its rows become chunks in a
new log directory, built beside the final one (`log.moving`) and renamed into place when
whole, so a stop halfway leaves the old file untouched and the move starts over. The old file
is deleted only after the rename. Dedup entries are rebuilt from the moved events: those of
events erased in the old log cannot be (their keys were blanked), so such an event sent again
within the window is stored again.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from array import array
from pathlib import Path
from typing import Final

import msgspec

from stellwerk.storage.eventlog.sqlite import chunks, index
from stellwerk.storage.eventlog.sqlite.logfiles import LogFiles

_decode_meta: Final = msgspec.msgpack.Decoder(list[chunks.Attributes]).decode
_BATCH: Final = 1000


def move_legacy_log(legacy: Path, directory: Path) -> bool:
    """Move the log at `legacy` (an `events.db`) into `directory`; True if there was one."""
    if directory.exists():
        _remove_database(legacy)  # moved before; the old file outlived the rename
        return False
    if not legacy.exists():
        return False
    building = directory.with_name(directory.name + ".moving")
    shutil.rmtree(building, ignore_errors=True)
    old = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True)
    new = index.connect(building / index.INDEX_FILE, role=index.Role.WRITER)
    files = LogFiles(building)
    try:
        tables = {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "segments" not in tables:
            raise RuntimeError(f"{legacy} is not a log Stellwerk can move (no segments table)")
        streams = {}
        for stream, tenant, bus, last_position in old.execute(
            "SELECT stream, tenant, bus, last_position FROM streams"
        ):
            streams[stream] = (tenant, bus)
            new.execute(
                "INSERT INTO streams (stream, tenant, bus, last_position) VALUES (?, ?, ?, ?)",
                (stream, tenant, bus, last_position),
            )
        files.open_for_append(1, 0)
        new.execute("BEGIN")
        rows = old.execute(
            "SELECT position, stream, count, recorded_us, meta, ends, bodies FROM segments"
            " ORDER BY position"
        )
        while batch := rows.fetchmany(_BATCH):
            pieces, metas = [], []
            for position, stream, count, recorded_us, meta, ends, bodies in batch:
                tenant, bus = streams[stream]
                pieces.append(
                    chunks.encode(
                        tenant,
                        bus,
                        position,
                        recorded_us,
                        _decode_meta(meta),
                        _bodies(ends, bodies, count),
                    )
                )
                metas.append((position, stream, count, recorded_us))
            for (position, stream, count, recorded_us), (file, offset), piece in zip(
                metas, files.append([(piece,) for piece in pieces]), pieces, strict=True
            ):
                new.execute(
                    index.INSERT_CHUNK,
                    (position, stream, count, recorded_us, file, offset, len(piece)),
                )
        for position, recorded_us in old.execute("SELECT position, recorded_us FROM marks"):
            new.execute(index.INSERT_MARK, (position, recorded_us))
        file, end = files.end
        new.execute(index.SET_STATE, ("indexed_file", file))
        new.execute(index.SET_STATE, ("indexed_end", end))
        # Every dedup entry is rebuilt from the moved events at the first open.
        new.execute(index.SET_STATE, ("flushed_below", 1))
        files.sync()
        new.execute("COMMIT")
        new.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        files.close()
        new.close()
        old.close()
    building.rename(directory)
    _remove_database(legacy)
    return True


def _bodies(ends: bytes, bodies: bytes, count: int) -> list[bytes]:
    offsets = array("I")
    offsets.frombytes(ends)
    out: list[bytes] = []
    start = 0
    for i in range(count):
        end = offsets[i]
        # An event erased in the old log had no body left; here a blank one marks it.
        out.append(bodies[start:end] if end > start else b" ")
        start = end
    return out


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()
