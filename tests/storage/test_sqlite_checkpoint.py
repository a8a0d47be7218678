"""The writer's own checkpoint past a WAL bound (`WalBound`), on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stellwerk.storage.sqlite import WalBound

MB = 1024 * 1024


def _wal_database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {MB // 2}")
    conn.execute("CREATE TABLE t (x BLOB)")
    return conn


def _write(conn: sqlite3.Connection, megabytes: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,)] * (megabytes * 256))
    conn.execute("COMMIT")


def test_the_writer_checkpoints_once_the_wal_passes_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    wal = tmp_path / "q.db-wal"
    conn = _wal_database(path)
    bound = WalBound(path, max_bytes=MB)
    _write(conn, 2)
    grown = wal.stat().st_size
    assert grown > MB

    bound.grew(MB // 32)
    bound.after_group(conn)  # not looked at yet: less than a sixteenth of the bound stored
    assert bound.checkpoints == 0
    bound.grew(MB // 32)
    bound.after_group(conn)
    assert bound.checkpoints == 1
    # Everything is in the file now, so the next write starts the WAL over (and shrinks it).
    conn.execute("INSERT INTO t VALUES (x'00')")
    assert wal.stat().st_size < grown
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2 * 256 + 1
    conn.close()


def test_below_the_bound_the_writer_leaves_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    conn = _wal_database(path)
    bound = WalBound(path, max_bytes=8 * MB)
    _write(conn, 1)
    for _ in range(3):
        bound.grew(MB)
        bound.after_group(conn)
    assert bound.checkpoints == 0
    conn.close()
