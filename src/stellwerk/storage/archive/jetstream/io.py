"""The JetStream requests of the archive store, over the event log's `Connection`.

Streams are made once per process (`storage/jetstream/streams.py`); table records are read from the
stream leader (a decision follows from them) and written by compare-and-set on the key's last
sequence; copies are published many at once and their acknowledgements awaited together
(`table.TableIO`, shared with the delivery queue). Every JetStream failure leaves here as
`ArchivesUnavailable`; a compare-and-set that finds another write first is not a failure but a
`None`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta

from nats.aio.msg import Msg

from stellwerk.seams import ArchiveStoreError
from stellwerk.storage.archive.jetstream.records import ArchiveLayout
from stellwerk.storage.jetstream import (
    Connection,
    JetStreamApiError,
    Put,
    StreamQueries,
    TableIO,
    ensure_stream,
    failures_as,
    log_config,
    records,
    table_config,
)


class ArchivesUnavailable(ArchiveStoreError):
    """JetStream did not answer, or refused: nothing is known to have changed. Try later."""


def unavailable_as_archive_error() -> AbstractContextManager[None]:
    return failures_as(ArchivesUnavailable)


class ArchiveIO:
    """The copies stream and the table of one namespace, on an open `Connection`."""

    def __init__(
        self, conn: Connection, layout: ArchiveLayout, *, replicas: int,
        dedup_window: timedelta, ack_timeout: float,
    ) -> None:  # fmt: skip
        self.conn = conn
        self.table = TableIO(conn, error=ArchivesUnavailable, ack_timeout=ack_timeout)
        self.queries = StreamQueries(conn)
        self.layout = layout
        self.replicas = replicas
        self.dedup_window = dedup_window
        self.ack_timeout = ack_timeout

    async def ensure_streams(self) -> None:
        copies = log_config(
            self.layout.copies_stream,
            [self.layout.copies_subjects],
            replicas=self.replicas,
            dedup_window=self.dedup_window,
        )
        table = table_config(
            self.layout.bucket,
            replicas=self.replicas,
            dedup_window=self.dedup_window,
            rollups=True,
            ttls=False,
        )
        with unavailable_as_archive_error():
            for config in (copies, table):
                await ensure_stream(self.conn, config)

    # -- the table -----------------------------------------------------------------------------

    async def record(self, key: str) -> tuple[int, bytes]:
        """The table's record under `key` from the leader: (its sequence, its data), or (0, b"")
        when there is none (0 is also what a compare-and-set on "no record yet" expects)."""
        found = await self.table.last(self.layout.table_stream, key)
        return (0, b"") if found is None else (found.seq, found.data)

    async def put(self, key: str, body: bytes, expected: int) -> int | None:
        return await self.table.put(Put(key, body, expected))

    # -- copies --------------------------------------------------------------------------------

    async def publish_many(self, puts: Sequence[Put]) -> list[int | None]:
        """Publish all at once; per put its sequence (a duplicate's: the original's), or None
        when its `expected` did not hold."""
        return await self.table.put_many(puts)

    async def page(self, subject: str, start: int, batch: int) -> list[Msg]:
        """Up to `batch` copies on `subject` from stream sequence `start` on (any replica)."""
        with unavailable_as_archive_error():
            return await self.queries.page(self.layout.copies_stream, subject, start, batch)

    async def count_from(self, subject: str, start: int) -> int:
        """How many copies `subject` holds from stream sequence `start` on: the first of them
        and the count JetStream says is pending after it (one request, no scan)."""
        found = await self.page(subject, start, 1)
        if not found:
            return 0
        pending = (found[0].headers or {}).get(records.NUM_PENDING)
        if pending is None:
            raise ArchivesUnavailable("JetStream did not say how many messages are pending")
        return 1 + int(pending)

    async def first_since(self, subject: str, since_us: int) -> int | None:
        """Where on `subject` the copies recorded at `since_us` or later begin (see
        `StreamQueries.first_since`); None if there is no copies stream yet."""
        stream = self.layout.copies_stream
        with unavailable_as_archive_error():
            state = await self.queries.state(stream)
            if state is None:
                return None
            return await self.queries.first_since(stream, subject, since_us, state)

    async def purge(self, subject: str, below: int | None = None) -> int:
        """Remove the copies on `subject` (those below sequence `below`, if given)."""
        request: dict[str, object] = {"filter": subject}
        if below is not None:
            request["seq"] = below
        with unavailable_as_archive_error():
            try:
                answer = await self.conn.api(
                    f"$JS.API.STREAM.PURGE.{self.layout.copies_stream}", request
                )
            except JetStreamApiError as exc:
                if exc.code == 404:  # no copies stream yet
                    return 0
                raise
        return int(answer.get("purged", 0))

    async def delete(self, seq: int, *, erase: bool) -> bool:
        """Remove copy `seq` (overwriting its bytes if `erase`); False if it was gone."""
        return await self.table.delete(self.layout.copies_stream, seq, erase=erase)
