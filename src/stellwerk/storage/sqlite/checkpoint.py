"""Folding the WAL back into the database file, in a thread of its own.

An automatic checkpoint inside a commit made one acknowledgement wait for the whole WAL; a
thread runs PASSIVE checkpoints instead, and `WalBound` has the writer checkpoint itself between
groups once the WAL passes a bound (docs/storage.md).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection (`connect()`, opened in its
    thread) when nudged after commits."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        interval: float = 0.1,
        name: str = "checkpoint",
    ) -> None:
        self._connect = connect
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.checkpoints = 0

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        """Called by the writer after a commit: there are frames to fold in."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                # A failed checkpoint (the writer's own one running, a disk hiccup) loses
                # nothing: the frames stay in the WAL and the next nudge tries again.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                # Throttle: one checkpoint per interval folds in many commits at once.
                if self._stop.wait(self._interval):
                    return
        finally:
            conn.close()


class WalBound:
    """The writer's own checkpoint, between two groups, once the WAL file passes `max_bytes`.

    `stat` releases the GIL as an SQLite call does, so the file is looked at only once the
    writer's groups have put a sixteenth of the bound into it since the last look (`grew`, with
    the bytes of what they stored: the WAL grows by more, so it overshoots by little).
    """

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self._wal = path.with_name(path.name + "-wal")
        self._max_bytes = max_bytes
        self._unchecked = 0
        self.checkpoints = 0

    def grew(self, stored: int) -> None:
        """A group stored about `stored` bytes."""
        self._unchecked += stored

    def after_group(self, conn: sqlite3.Connection) -> None:
        """Called by the writer between groups, outside any transaction."""
        if self._unchecked < self._max_bytes // 16:
            return
        self._unchecked = 0
        # A failed look or checkpoint (a full disk) is tried again at the next look.
        with contextlib.suppress(sqlite3.Error, OSError):
            if self._wal.stat().st_size > self._max_bytes:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
