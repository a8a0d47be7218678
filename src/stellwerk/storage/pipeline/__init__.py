"""pipeline.db: the delivery queue and the archive store on one engine, so that what the pipeline
process changes (a route and its cursor, an archived batch and its cursor, acks) shares one
commit and one fsync. A data directory from before (deliveries.db, archives.db) is moved into
it on the first start (docs/storage.md, docs/operations.md)."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from stellwerk.clock import utc_now
from stellwerk.storage.archive import sqlite as archive
from stellwerk.storage.queue import sqlite as queue
from stellwerk.storage.sqlite import (
    ARCHIVES_FILE,
    DELIVERIES_FILE,
    PIPELINE_FILE,
    AdoptError,
    Engine,
    adopt,
)

__all__ = ["AdoptError", "PipelineStores", "pipeline_stores", "prepare"]


@dataclass(frozen=True, slots=True)
class PipelineStores:
    """The two stores on one engine; each opens the engine with its `start` and the last
    `close` closes it."""

    engine: Engine
    queue: queue.SqliteDeliveryQueue
    archives: archive.SqliteArchiveStore


def pipeline_stores(data_dir: Path, *, clock: Callable[[], datetime] = utc_now) -> PipelineStores:
    engine = Engine(
        data_dir / PIPELINE_FILE,
        name="pipeline",
        setup=[functools.partial(prepare, data_dir=data_dir)],
    )
    return PipelineStores(
        engine,
        queue.SqliteDeliveryQueue(engine, clock=clock, archive_here=True),
        archive.SqliteArchiveStore(engine, before_delete=queue.give_archived_bytes),
    )


def prepare(conn: sqlite3.Connection, data_dir: Path) -> None:
    """On the engine's writer as it opens: both stores' tables (replayed deliveries point at
    archived copies), then the files from before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        queue.create_tables(conn)
        archive.create_tables(conn)
        queue.refer_to_archive(conn)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    copied = adopt(conn, data_dir / DELIVERIES_FILE, queue.LEGACY_TABLES)
    copied = adopt(conn, data_dir / ARCHIVES_FILE, archive.LEGACY_TABLES) or copied
    if copied:
        # Fold the copies into the file now rather than in the first groups' checkpoints.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
