"""Many rows in few statements: `InsertRows` writes a list of rows as multi-row `VALUES`.

`executemany` hands the GIL over once per row, which a busy event loop makes slow; one statement
of n rows is one step (docs/storage.md). Statements are made for powers of two up to `MAX_ROWS`.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

MAX_ROWS: Final = 256  # 256 rows x 13 columns stays far below SQLite's bound on parameters


class InsertRows:
    """`InsertRows("INSERT INTO t (a, b)")(conn, rows)` inserts `rows`, each of one value per
    column named. Rows go in in order, so the rowids they get are in order too."""

    __slots__ = ("_head", "_placeholders", "_statements")

    def __init__(self, head: str) -> None:
        opened, closed = head.find("("), head.rfind(")")
        if opened < 0 or closed < opened or not head[opened + 1 : closed].strip():
            raise ValueError(f"name the columns in parentheses: {head!r}")
        columns = head[opened + 1 : closed].count(",") + 1
        self._head = head
        self._placeholders = "(" + ", ".join(["?"] * columns) + ")"
        self._statements: dict[int, str] = {}

    def statement(self, rows: int) -> str:
        """The statement that inserts `rows` rows (a power of two up to MAX_ROWS)."""
        sql = self._statements.get(rows)
        if sql is None:
            values = ", ".join([self._placeholders] * rows)
            sql = self._statements[rows] = f"{self._head} VALUES {values}"
        return sql

    def __call__(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        start, left = 0, len(rows)
        while left:
            count = min(MAX_ROWS, 1 << (left.bit_length() - 1))
            flat = list(itertools.chain.from_iterable(rows[start : start + count]))
            conn.execute(self.statement(count), flat)
            start += count
            left -= count
