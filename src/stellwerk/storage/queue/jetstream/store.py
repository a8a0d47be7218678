"""The JetStream requests the delivery queue makes.

Reads that decide something go to the stream leader; reads of what cannot change take Direct
Get. Every JetStream failure leaves here as `QueueUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Final

from stellwerk.seams import DeliveryQueueError
from stellwerk.storage.jetstream import (
    SCAN_BATCH,
    Connection,
    Put,
    Stored,
    TableIO,
    ensure_stream,
    failures_as,
    log_config,
    stored,
    table_config,
)
from stellwerk.storage.queue.jetstream.records import DELIVERY_HEADER, QueueLayout

_RUN_MAX: Final = 256  # messages one batch read of members may span
_INFO_PAGE: Final = 100_000


class QueueUnavailable(DeliveryQueueError):
    """JetStream did not answer, or refused: nothing is known to have changed. Try later."""


def unavailable_as_queue_error() -> AbstractContextManager[None]:
    return failures_as(QueueUnavailable)


class DeliveryStore:
    """The members stream and the table of one namespace, on an open `Connection`."""

    def __init__(
        self, conn: Connection, layout: QueueLayout, *, replicas: int, dedup_window: timedelta,
        ack_timeout: float,
    ) -> None:  # fmt: skip
        self.conn = conn
        self.io = TableIO(conn, error=QueueUnavailable, ack_timeout=ack_timeout)
        self.layout = layout
        self.replicas = replicas
        self.dedup_window = dedup_window
        self.ack_timeout = ack_timeout

    # -- streams -------------------------------------------------------------------------------

    async def ensure_streams(self) -> None:
        # A finished unordered delivery's message goes by a rollup marker that expires.
        members = log_config(
            self.layout.members_stream,
            [self.layout.members_subjects],
            replicas=self.replicas,
            dedup_window=self.dedup_window,
            allow_rollup_hdrs=True,
            allow_msg_ttl=True,
        )
        # Deletes allowed for erasure, and per-message TTLs so that the records of finished
        # lanes go after the dedup window.
        table = table_config(
            self.layout.bucket,
            replicas=self.replicas,
            dedup_window=self.dedup_window,
            rollups=True,
            ttls=True,
        )
        with unavailable_as_queue_error():
            for config in (members, table):
                await ensure_stream(self.conn, config)

    # -- reads ---------------------------------------------------------------------------------

    async def last(self, subject: str) -> Stored | None:
        """The table's record under `subject`, from the leader; None if there is none."""
        return await self.io.last(self.layout.table_stream, subject)

    async def next_member(self, subject: str, after: int) -> Stored | None:
        """The first member message on `subject` above sequence `after`, from the leader
        (skipping the markers that finished deliveries leave)."""
        while True:
            request = {"next_by_subj": subject, "seq": after + 1}
            found = await self.io.get(self.layout.members_stream, request)
            if found is None or DELIVERY_HEADER in found.headers:
                return found
            after = found.seq

    async def members(self, seqs: Sequence[int]) -> dict[int, Stored]:
        """Member messages by sequence; those that are gone are missing from the answer.

        Members are immutable, so any replica may answer. Runs of nearby sequences (a lease
        of deliveries routed together) are read with one Direct Get batch each; what a
        lagging replica did not have yet is asked of the leader.
        """
        found: dict[int, Stored] = {}
        with unavailable_as_queue_error():
            pages = await asyncio.gather(*(self._run(run) for run in _runs(sorted(set(seqs)))))
        wanted = set(seqs)
        for page in pages:
            found.update((m.seq, m) for m in page if m.seq in wanted)
        missing = [seq for seq in wanted if seq not in found]
        stream = self.layout.members_stream
        again = await asyncio.gather(*(self.io.get(stream, {"seq": seq}) for seq in missing))
        found.update((m.seq, m) for m in again if m is not None)
        return found

    async def member(self, seq: int) -> Stored | None:
        return (await self.members([seq])).get(seq)

    async def _run(self, run: tuple[int, int]) -> list[Stored]:
        first, last = run
        request = {
            "seq": first,
            "batch": last - first + 1,
            "next_by_subj": self.layout.members_subjects,
        }
        page = await self.conn.direct_batch(self.layout.members_stream, request)
        return [m for m in map(stored, page) if m.seq <= last]

    def scan(
        self, stream: str, subjects: str, start: int = 1, batch: int = SCAN_BATCH
    ) -> AsyncIterator[list[Stored]]:
        """Every stored message on `subjects` from sequence `start` on, a page at a time."""
        return self.io.scan(stream, subjects, start, batch)

    async def subject_counts(self, stream: str, subjects: str) -> dict[str, int]:
        """Messages per subject matching `subjects` (the stream's own count, paged)."""
        counts: dict[str, int] = {}
        with unavailable_as_queue_error():
            while True:
                request = {"subjects_filter": subjects, "offset": len(counts)}
                info = await self.conn.api(f"$JS.API.STREAM.INFO.{stream}", request)
                page = info.get("state", {}).get("subjects") or {}
                counts.update(page)
                if not page or len(counts) >= int(info.get("total", 0)) or len(page) < _INFO_PAGE:
                    return counts

    # -- writes --------------------------------------------------------------------------------

    async def put_many(self, puts: Sequence[Put]) -> list[int | None]:
        return await self.io.put_many(puts)

    async def put(self, put: Put) -> int | None:
        return await self.io.put(put)

    async def delete(self, stream: str, seq: int, *, erase: bool = False) -> bool:
        return await self.io.delete(stream, seq, erase=erase)


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted sequences as (first, last) runs that a batch read covers without reading more
    than as many other messages as wanted ones."""
    runs: list[tuple[int, int]] = []
    count = 0
    for seq in seqs:
        if runs:
            first = runs[-1][0]
            if seq - first + 1 <= 2 * (count + 1) + 8 and seq - first < _RUN_MAX:
                runs[-1] = (first, seq)
                count += 1
                continue
        runs.append((seq, seq))
        count = 1
    return runs
