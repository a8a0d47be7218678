"""Erasure in the embedded log: it goes a chunk at a time, and leaves no erased bytes in the files,
even when the process stops halfway."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import msgspec
from tests.storage.eventlog_support import ACME_DEFAULT, body_of, new_event

from stellwerk.refs import TenantName
from stellwerk.seams import ErasedEvent, StoredEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog, chunks
from stellwerk.storage.eventlog.sqlite.index import INDEX_FILE
from stellwerk.storage.sqlite import LOG_DIR


def _is_ann(event: StoredEvent) -> bool:
    data = body_of(event.body)["data"]
    return isinstance(data, dict) and data.get("user") == "ann"


async def test_a_large_erasure_goes_a_chunk_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(path) as log:
        for start in range(0, 1000, 250):
            await log.append(
                [
                    new_event(f"e{i}", data={"user": "ann" if i % 4 == 0 else "bob"})
                    for i in range(start, start + 250)
                ]
            )
        chunks: list[int] = []

        async def before(chunk: Sequence[ErasedEvent]) -> None:
            chunks.append(len(chunk))

        erased = await log.erase(TenantName("acme"), "default", b"ann", _is_ann, before)
        kept = await log.read(ACME_DEFAULT, limit=1000)

    assert len(erased) == 250
    assert [e.id for e in kept] == [f"e{i}" for i in range(1000) if i % 4]
    # Each step is one chunk (an append of 250 events here): a quarter of them are ann's.
    assert chunks == [63, 62, 63, 62]


async def test_erased_bytes_are_gone_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(path) as log:
        await log.append(
            [
                new_event("e1", data={"user": "ann", "note": "ann-secret-7f3a"}),
                new_event("e2", data={"user": "bob", "note": "bob-keeps-9c1d"}),
            ]
        )
        await log.erase(TenantName("acme"), None, b"", _is_ann)

    raw = b"".join(f.read_bytes() for f in sorted(path.iterdir()) if f.is_file())
    assert b"ann-secret-7f3a" not in raw
    assert b"bob-keeps-9c1d" in raw
    with sqlite3.connect(path / INDEX_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM erasing").fetchone()[0] == 0


async def test_an_erasure_cut_short_is_finished_when_the_log_opens(tmp_path: Path) -> None:
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(path) as log:
        (ann, _bob) = await log.append(
            [
                new_event("e1", data={"user": "ann", "note": "ann-secret-7f3a"}),
                new_event("e2", data={"user": "bob", "note": "bob-keeps-9c1d"}),
            ]
        )
    # What a process killed between recording an erasure and overwriting the bytes leaves.
    with sqlite3.connect(path / INDEX_FILE) as conn:
        file, offset, length = conn.execute("SELECT file, offset, length FROM chunks").fetchone()
    logfile = path / f"{file:020d}.log"
    raw = logfile.read_bytes()[offset : offset + length]
    pieces = chunks.blanked(raw, [0])
    with sqlite3.connect(path / INDEX_FILE) as conn:
        conn.execute(
            "INSERT INTO erasing (file, offset, pieces) VALUES (?, ?, ?)",
            (file, offset, msgspec.msgpack.encode(pieces)),
        )
    assert b"ann-secret-7f3a" in logfile.read_bytes()

    async with SqliteEventLog(path) as log:
        assert [e.id for e in await log.read(ACME_DEFAULT)] == ["e2"]
        # Its key outlives it (the entry went to the dedup runs when the log closed).
        (again,) = await log.append([new_event("e1")])
        assert again.position == ann.position
    assert b"ann-secret-7f3a" not in logfile.read_bytes()
