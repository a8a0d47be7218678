"""Folding the WAL back into the database file, in a thread of its own.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so every few
megabytes one acknowledgement waited for the copy of the whole WAL and two fsyncs: at half the
log's maximum rate that made p99 latency ten times p50 (measured with bench/eventlog.py). The
writer's connection therefore checkpoints never by itself; this thread runs PASSIVE checkpoints,
which do not block the writer, at most every `interval` seconds while there are commits.

A PASSIVE checkpoint cannot finish while the writer keeps appending, and the WAL only starts over
once one has. So when the WAL file passes `max_wal_bytes` the writer checkpoints itself between
two groups (`GroupCommitter`): under sustained saturation the WAL stays bounded and the cost
falls where the load is.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from stellwerk.storage.sqlite import schema


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection when nudged after commits."""

    def __init__(self, path: Path, *, interval: float = 0.1) -> None:
        self._path = path
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventlog-checkpoint", daemon=True)
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
        conn = schema.connect(self._path, role=schema.Role.CHECKPOINTER)
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
