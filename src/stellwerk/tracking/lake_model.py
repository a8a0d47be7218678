"""What the lake's API says without DuckDB installed: the query's limits and answer. The lake
itself (`lake.py`, `lake_query.py`) needs the `lake` extra; without it the server starts with
the lake off, and its query answers 503 saying so."""

from __future__ import annotations

import importlib.util
from typing import Any, Final

import msgspec

MAX_SQL_CHARS: Final = 100_000


class QueryResult(msgspec.Struct, frozen=True):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool


def lake_installed() -> bool:
    """Whether DuckDB (the `lake` extra) can be imported."""
    return importlib.util.find_spec("duckdb") is not None
