"""Moving a store's tables from the file it had before into an engine's file, once.

The copy and a note that it was made commit in one transaction of the new file, and the old
file is removed only after that commit: stopped anywhere, the next start copies again or only
removes what is left (docs/operations.md, "Data directory").
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from stellwerk.clock import to_us, utc_now

_ADOPTED: Final = (
    "CREATE TABLE IF NOT EXISTS adopted_files (name TEXT PRIMARY KEY, at_us INTEGER NOT NULL)"
)


class AdoptError(Exception):
    """An old file's tables cannot be moved into the new file; the message says why."""


def adopt(conn: sqlite3.Connection, old: Path, tables: Mapping[str, str]) -> bool:
    """Copy `old`'s tables (its name -> the name here) into `conn`'s file unless that was done;
    then remove `old`. Returns whether rows were copied now. `conn` is a writer outside any
    transaction; other processes may be adopting the same file at the same time."""
    conn.execute(_ADOPTED)
    if not old.exists():
        return False
    # If another process removed it just now, this makes an empty file: the note of the copy is
    # there then (it is removed only after that commit), and the empty file goes below.
    conn.execute("ATTACH DATABASE ? AS old", (str(old),))
    try:
        copied = _copy_once(conn, old, tables)
    finally:
        conn.execute("DETACH DATABASE old")
    for path in (old, _beside(old, "-wal"), _beside(old, "-shm")):
        path.unlink(missing_ok=True)
    return copied


def _copy_once(conn: sqlite3.Connection, old: Path, tables: Mapping[str, str]) -> bool:
    # On disk before the old file goes, whatever the writer's `synchronous` is otherwise.
    (level,) = conn.execute("PRAGMA main.synchronous").fetchone()
    conn.execute("PRAGMA main.synchronous = FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM adopted_files WHERE name = ?", (old.name,))
            if done.fetchone() is not None:
                conn.execute("ROLLBACK")
                return False
            for name, here in tables.items():
                _copy_table(conn, name, here)
            conn.execute(
                "INSERT INTO adopted_files (name, at_us) VALUES (?, ?)",
                (old.name, to_us(utc_now())),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise AdoptError(f"cannot move {old} into {_main_file(conn)}: {exc}") from exc
    finally:
        conn.execute(f"PRAGMA main.synchronous = {level}")
    return True


def _copy_table(conn: sqlite3.Connection, name: str, here: str) -> None:
    old_columns = [row[1] for row in conn.execute(f"PRAGMA old.table_info({name})")]
    if not old_columns:
        return  # the old file never had it
    columns = {row[1] for row in conn.execute(f"PRAGMA main.table_info({here})")}
    shared = ", ".join(c for c in old_columns if c in columns)
    conn.execute(f"INSERT INTO main.{here} ({shared}) SELECT {shared} FROM old.{name}")
    # AUTOINCREMENT: numbers handed out in the old file are not handed out again here.
    has_sequence = conn.execute(
        "SELECT 1 FROM old.sqlite_master WHERE name = 'sqlite_sequence'"
    ).fetchone()
    if has_sequence is not None:
        row = conn.execute("SELECT seq FROM old.sqlite_sequence WHERE name = ?", (name,))
        top = row.fetchone()
        if top is not None:
            moved = conn.execute(
                "UPDATE main.sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (top[0], here)
            )
            if moved.rowcount == 0:
                conn.execute(
                    "INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", (here, top[0])
                )


def _main_file(conn: sqlite3.Connection) -> str:
    for _, schema, file in conn.execute("PRAGMA database_list"):
        if schema == "main":
            return str(file)
    return "the database"


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)
