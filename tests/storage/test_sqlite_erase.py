"""Erasure in the embedded log: it goes in small steps, and leaves no erased bytes in the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from tests.storage.eventlog_support import body_of, new_event

from stellwerk.seams import ErasedEvent, StoredEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import EVENTS_FILE


def _is_ann(event: StoredEvent) -> bool:
    data = body_of(event.body)["data"]
    return isinstance(data, dict) and data.get("user") == "ann"


async def test_a_large_erasure_goes_in_chunks_and_transactions_of_bounded_size(
    tmp_path: Path,
) -> None:
    path = tmp_path / EVENTS_FILE
    async with SqliteEventLog(path, erase_scan_events=100, erase_job_bytes=1) as log:
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

        erased = await log.erase("acme", "default", b"ann", _is_ann, before)
        kept = await log.read("acme", "default", limit=1000)

    assert len(erased) == 250
    assert [e.id for e in kept] == [f"e{i}" for i in range(1000) if i % 4]
    # Each step looks at about 100 events (whole segments): a quarter of them are ann's.
    assert len(chunks) >= 4
    assert max(chunks) <= 250 // 2


async def test_erased_bytes_are_gone_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    async with SqliteEventLog(path) as log:
        await log.append(
            [
                new_event("e1", data={"user": "ann", "note": "ann-secret-7f3a"}),
                new_event("e2", data={"user": "bob", "note": "bob-keeps-9c1d"}),
            ]
        )
        await log.erase("acme", None, b"", _is_ann)

    raw = path.read_bytes()
    assert b"ann-secret-7f3a" not in raw
    assert b"bob-keeps-9c1d" in raw
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
