"""`InsertRows`: many rows in few multi-row statements, in order, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stellwerk.storage.sqlite import MAX_ROWS, InsertRows


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "rows.db", isolation_level=None)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, body BLOB)")
    return connection


@pytest.mark.parametrize("count", [0, 1, 3, MAX_ROWS - 1, MAX_ROWS, MAX_ROWS + 1, 1000])
def test_every_row_goes_in_with_its_values_in_order(conn: sqlite3.Connection, count: int) -> None:
    insert = InsertRows("INSERT INTO t (name, body)")
    rows = [(f"n{i}", bytes([i % 256]) * (i % 7)) for i in range(count)]
    insert(conn, rows)
    assert conn.execute("SELECT name, body FROM t ORDER BY id").fetchall() == rows


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(min_value=0, max_value=3 * MAX_ROWS), max_size=6))
def test_statements_stay_few_whatever_the_counts(counts: list[int]) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
    insert = InsertRows("INSERT INTO t (a, b)")
    for count in counts:
        insert(conn, [(i, -i) for i in range(count)])
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == sum(counts)
    made = {n for n in range(1, MAX_ROWS + 1) if n in insert._statements}
    assert all(n & (n - 1) == 0 for n in made), made  # powers of two only
    assert len(made) <= MAX_ROWS.bit_length()


def test_a_failing_row_fails_its_statement(conn: sqlite3.Connection) -> None:
    insert = InsertRows("INSERT INTO t (id, name)")
    with pytest.raises(sqlite3.IntegrityError):
        insert(conn, [(1, "a"), (1, "again")])


@pytest.mark.parametrize("head", ["INSERT INTO t", "INSERT INTO t ()", "INSERT INTO t )("])
def test_the_columns_must_be_named(head: str) -> None:
    with pytest.raises(ValueError, match="name the columns"):
        InsertRows(head)


def test_as_many_placeholders_as_columns_named() -> None:
    assert InsertRows("INSERT INTO t (id, name, body)").statement(2) == (
        "INSERT INTO t (id, name, body) VALUES (?, ?, ?), (?, ?, ?)"
    )
