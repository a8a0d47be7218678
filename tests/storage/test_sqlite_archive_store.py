"""What only the SQLite archive store has: its file, transactions and chunked deletes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.storage.archive_support import T0, read_all, stored

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import ArchiveStats, StoredEvent
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.archive.sqlite.store import DELETE_CHUNK
from stellwerk.storage.sqlite import PIPELINE_FILE

ACME_DEFAULT = BusRef(TenantName("acme"), "default")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / PIPELINE_FILE


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteArchiveStore]:
    async with SqliteArchiveStore(path) as opened:
        yield opened


async def test_a_failing_archive_stores_neither_copies_nor_cursor(
    store: SqliteArchiveStore,
) -> None:
    good = stored(1)
    # SQLite cannot bind a list: the insert fails after the first copy went in.
    bad = StoredEvent(
        "acme", "default", 2, "e2", "/orders", "order.created", ["x"],  # type: ignore[arg-type]
        T0, b"{}",
    )  # fmt: skip

    with pytest.raises(Exception, match="type 'list' is not supported"):
        await store.archive(ACME_DEFAULT, 2, [("a1", good), ("a1", bad)])

    assert await store.cursor(ACME_DEFAULT) == 0
    assert await read_all(store, "a1") == []
    assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}
    await store.archive(ACME_DEFAULT, 2, [("a1", good)])
    assert [e.position for e in await read_all(store, "a1")] == [1]


async def test_trim_and_drop_go_in_chunks_past_the_chunk_size(store: SqliteArchiveStore) -> None:
    n = DELETE_CHUNK + 5
    await store.archive(ACME_DEFAULT, n, [("a1", stored(p)) for p in range(1, n + 1)])

    assert await store.trim("a1", T0 + timedelta(seconds=1)) == n
    assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}


async def test_erased_copies_are_not_left_readable_in_the_file(
    store: SqliteArchiveStore, path: Path
) -> None:
    await store.archive(ACME_DEFAULT, 2, [("a1", stored(1, user="zeta-person-42"))])

    await store.erase(["a1"], b"zeta-person-42", lambda e: True)
    await store.close()

    assert b"zeta-person-42" not in _checkpointed(path)


def _checkpointed(path: Path) -> bytes:
    """The file's bytes once everything in the WAL has been written into it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.read_bytes()
