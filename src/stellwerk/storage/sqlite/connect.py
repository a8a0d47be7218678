"""Connections to an engine's database file, with the pragmas of their role.

Every connection is in autocommit mode (transactions are explicit) and waits for another
process's lock (`busy_timeout`) rather than failing at once: two processes share a file.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

BUSY_TIMEOUT_MS: Final = 10_000
MAX_WAL_BYTES: Final = 64 * 1024 * 1024  # the writer checkpoints itself past this (WalBound)


_SECURE_DELETE: Final = {0: "OFF", 1: "ON", 2: "FAST"}  # as the pragma reads, as it is set


class Role(enum.Enum):
    WRITER = "writer"
    READER = "reader"
    CHECKPOINTER = "checkpointer"


def connect(path: Path, role: Role, *, max_wal_bytes: int = MAX_WAL_BYTES) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if role is Role.WRITER:
            _writer(conn, path, max_wal_bytes)
        elif role is Role.READER:
            conn.execute("PRAGMA query_only = ON")
        # The checkpointer keeps the defaults: a checkpoint syncs the WAL before it copies and
        # the file after, at any `synchronous` but OFF.
    except BaseException:
        conn.close()
        raise
    return conn


def _writer(conn: sqlite3.Connection, path: Path, max_wal_bytes: int) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"{path} cannot be put in WAL mode (got {mode})")
    # The engine sets FULL for each group that needs it.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread does it
    conn.execute(f"PRAGMA journal_size_limit = {max_wal_bytes}")
    # Deleted rows (acked deliveries) are zeroed only where that costs no extra page write;
    # jobs that erase or trim personal data zero everything (`erasing`).
    conn.execute("PRAGMA secure_delete = FAST")


@contextlib.contextmanager
def erasing(conn: sqlite3.Connection) -> Iterator[None]:
    """Within a job: what it deletes is overwritten with zeros, not left in free pages, so an
    erasure does not leave a person's data readable in the file."""
    (before,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete = {_SECURE_DELETE[before]}")
