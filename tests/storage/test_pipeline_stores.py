"""pipeline.db's two stores together: a replayed delivery points at the archived copy."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

from tests.storage.archive_support import ACME, T0, read_all, stored

from stellwerk.refs import BusRef
from stellwerk.seams import NewDelivery
from stellwerk.storage.pipeline import pipeline_stores

BUS = BusRef(ACME, "default")
TAIL = b',"replayname":"r"}'


async def test_a_replayed_delivery_stores_its_own_bytes_and_outlives_its_archived_copy(
    tmp_path: Path,
) -> None:
    stores = pipeline_stores(tmp_path, clock=lambda: T0)
    async with stores.archives as archives, stores.queue as queue:
        await archives.archive(BUS, 1, [("a1", stored(1))])
        (copy,) = await read_all(archives, "a1")
        kept = len(copy.body) - 1
        payload = copy.body[:kept] + TAIL
        delivery = NewDelivery(
            ACME, "default", "backfill", "hook", copy.id, copy.source, copy.position,
            copy.recorded_time, payload, "application/json",
            archived_seq=copy.seq, archived_kept=kept,
        )  # fmt: skip
        await queue.route_replay(ACME, "r", copy.seq, 1, [delivery], after=0)
        with contextlib.closing(sqlite3.connect(stores.engine.path)) as conn:
            assert conn.execute("SELECT payload, archived FROM deliveries").fetchall() == [
                (TAIL, copy.seq)
            ]

        await archives.drop("a1")

        (leased,) = await queue.lease(T0 + timedelta(days=1), 10, 60)
        assert leased.payload == payload
