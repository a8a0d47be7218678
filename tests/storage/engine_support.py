"""Helpers for tests of the SQLite engine and the stores on it: its statements, a held writer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator

from tests.polling import eventually

from stellwerk.storage.sqlite import Engine, Handle


@contextlib.contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine's writer runs meanwhile (a pragma has no other witness)."""
    conn = engine._conn
    assert conn is not None, "the engine is not open"
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def commits(seen: list[str]) -> list[tuple[str, list[str]]]:
    """The write transactions in `seen`: their `synchronous` and their statements."""
    out: list[tuple[str, list[str]]] = []
    mode, inside = "NORMAL", False
    body: list[str] = []
    for statement in seen:
        if statement.startswith("PRAGMA synchronous = "):
            mode = statement.rpartition(" ")[2]
        elif statement == "BEGIN IMMEDIATE":
            inside, body = True, []
        elif statement == "COMMIT" and inside:
            out.append((mode, body))
            inside = False
        elif inside:
            body.append(statement)
    return out


@contextlib.asynccontextmanager
async def held(engine: Engine) -> AsyncIterator[None]:
    """The writer is busy with a job until the block ends: what is submitted meanwhile waits
    and goes into the next group together."""
    handle = engine.handle("a holding test", closed=RuntimeError, failed=RuntimeError)
    entered, leave = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        leave.wait()

    holding = asyncio.ensure_future(handle.inside(hold))
    await asyncio.to_thread(entered.wait)
    try:
        yield
    finally:
        leave.set()
        await holding


def handle_of(engine: Engine) -> Handle:
    return engine.handle("a test", closed=RuntimeError, failed=RuntimeError)


async def until_waiting(engine: Engine, jobs: int) -> None:
    """Until `jobs` jobs are queued for the (held) writer."""
    await eventually(lambda: engine.waiting >= jobs)
