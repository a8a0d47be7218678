"""The scale-out archive store on NATS JetStream: one stream of copies, a subject per archive.

`archive` publishes the copies, counts them into each archive's totals, then moves the bus's
cursor by compare-and-set, so an archiver that dies midway stores and counts nothing twice
(docs/scale-out.md, "Archiving atomically enough").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from stellwerk.clock import to_us
from stellwerk.refs import BusRef
from stellwerk.seams import (
    ArchiveCursorConflict,
    ArchivedEvent,
    ArchiveEraseMatch,
    ArchiveStats,
    ArchiveStoreClosed,
    ArchiveStoreError,
    StoredEvent,
)
from stellwerk.storage.archive.contract import CheckedArchiveStore, check_archive_cursor
from stellwerk.storage.archive.jetstream.io import ArchiveIO, unavailable_as_archive_error
from stellwerk.storage.archive.jetstream.records import (
    ArchiveCursor,
    ArchiveLayout,
    Copies,
    copy_headers,
    decode_cursor,
    encode,
)
from stellwerk.storage.archive.jetstream.upkeep import ArchiveUpkeep
from stellwerk.storage.jetstream import Connection, Put, nothing_left, records

DEFAULT_DEDUP_WINDOW: Final = timedelta(minutes=10)
COUNT_PAGE: Final = 1000


@dataclass(frozen=True)
class _Open:
    io: ArchiveIO
    upkeep: ArchiveUpkeep


class JetStreamArchiveStore(CheckedArchiveStore):
    """The `ArchiveStore` on JetStream at `url` (a server list may be comma-separated).

    `namespace` prefixes streams and subjects as for the event log; `replicas` is the stream
    replication (1, or 3 in a cluster); `dedup_window` the copies stream's duplicate window
    (see the module docstring for what it guards). Every process of one namespace must use the
    same `replicas` and `dedup_window`. `time_slack` is how far recorded times may run out of
    order between processes; `secure_erase` has JetStream overwrite erased copies' bytes.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "stellwerk",
        replicas: int = 1,
        request_timeout: float = 5.0,
        ack_timeout: float = 10.0,
        dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
        time_slack: timedelta = timedelta(seconds=10),
        secure_erase: bool = True,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        self.url = url
        self.layout = ArchiveLayout(namespace)
        self.replicas = replicas
        self._request_timeout = request_timeout
        self._ack_timeout = ack_timeout
        self._dedup_window = dedup_window
        self._slack_us = time_slack // timedelta(microseconds=1)
        self._secure_erase = secure_erase
        self._open: _Open | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._open is not None:
            raise ArchiveStoreError("the archive store was already started")
        conn = Connection(
            self.url, request_timeout=self._request_timeout, name="stellwerk-archives"
        )
        with unavailable_as_archive_error():
            await conn.open()
        io = ArchiveIO(
            conn,
            self.layout,
            replicas=self.replicas,
            dedup_window=self._dedup_window,
            ack_timeout=self._ack_timeout,
        )
        try:
            await io.ensure_streams()
        except BaseException:
            await conn.close()
            raise
        self._open = _Open(
            io, ArchiveUpkeep(io, slack_us=self._slack_us, secure_erase=self._secure_erase)
        )

    async def close(self) -> None:
        opened, self._open = self._open, None
        if opened is not None:
            await opened.io.conn.close()

    async def ping(self) -> None:
        io = self._running().io
        with unavailable_as_archive_error():
            await io.conn.api(f"$JS.API.STREAM.INFO.{self.layout.table_stream}")

    def _running(self) -> _Open:
        if self._open is None:
            raise ArchiveStoreClosed("the archive store is not open")
        return self._open

    # -- the archiver's side -------------------------------------------------------------------

    async def cursor(self, bus: BusRef) -> int:
        _, data = await self._running().io.record(self.layout.cursor_key(bus))
        return decode_cursor(data).position if data else 0

    async def _archive(
        self,
        bus: BusRef,
        position: int,
        entries: Sequence[tuple[str, StoredEvent]],
    ) -> None:
        io, upkeep = self._running().io, self._running().upkeep
        key = self.layout.cursor_key(bus)
        cursor_seq, data = await io.record(key)
        current = decode_cursor(data).position if data else 0
        check_archive_cursor(bus, current, position, entries)
        # In position order, so that `seq` follows position within each archive.
        by_uid: dict[str, list[StoredEvent]] = {}
        for uid, event in sorted(entries, key=lambda entry: entry[1].position):
            by_uid.setdefault(uid, []).append(event)
        totals = dict(zip(by_uid, await asyncio.gather(*map(upkeep.totals, by_uid)), strict=True))
        copies = [
            Put(self.layout.copies_subject(uid), event.body, headers=copy_headers(uid, event))
            for uid, events in by_uid.items()
            for event in events
            if event.position > totals[uid][1].upto  # not stored and counted by an earlier try
        ]
        await io.publish_many(copies)
        await asyncio.gather(*(upkeep.count_in(uid, events) for uid, events in by_uid.items()))
        if await io.put(key, encode(ArchiveCursor(position)), cursor_seq) is None:
            raise ArchiveCursorConflict(f"{bus}: another archiver moved the cursor")

    # -- reading -------------------------------------------------------------------------------

    async def _read_window(
        self, uid: str, start: datetime, end: datetime, after_seq: int, limit: int
    ) -> list[ArchivedEvent]:
        out: list[ArchivedEvent] = []
        async with contextlib.aclosing(self._window(uid, start, end, after_seq, limit)) as found:
            async for event in found:
                out.append(event)
                if len(out) == limit:
                    break
        return out

    async def count_window(self, uid: str, start: datetime, end: datetime) -> int:
        """Copies are looked at only where recorded times may be out of order, within
        `time_slack` of `start` and of `end`; between those stretches JetStream's count of
        the messages still pending after a copy tells how many there are."""
        io = self._running().io
        start_us, end_us = to_us(start), to_us(end)
        if start_us >= end_us:
            return 0
        subject, slack = self.layout.copies_subject(uid), self._slack_us
        borders = await asyncio.gather(
            *(io.first_since(subject, us) for us in (start_us + slack, end_us - slack))
        )
        inner_start, inner_end = (border or 0 for border in borders)
        if inner_start >= inner_end:  # a narrow window: look at every copy
            return await self._count_scan(uid, start, end, 0)
        from_start, from_end, early, late = await asyncio.gather(
            io.count_from(subject, inner_start),
            io.count_from(subject, inner_end),
            self._count_scan(uid, start, end, 0, stop_before=inner_start),
            self._count_scan(uid, start, end, inner_end - 1),
        )
        inside = from_start - from_end
        return early + inside + late

    async def _count_scan(
        self, uid: str, start: datetime, end: datetime, after_seq: int, stop_before: int = 0
    ) -> int:
        count = 0
        window = self._window(uid, start, end, after_seq, COUNT_PAGE, stop_before)
        async with contextlib.aclosing(window) as found:
            async for _ in found:
                count += 1
        return count

    async def _window(
        self,
        uid: str,
        start: datetime,
        end: datetime,
        after_seq: int,
        page: int,
        stop_before: int = 0,
    ) -> AsyncGenerator[ArchivedEvent, None]:
        """The archive's copies recorded in `[start, end)` above `after_seq` (and below
        `stop_before` if given), in seq order."""
        io = self._running().io
        start_us, end_us = to_us(start), to_us(end)
        if start_us >= end_us:
            return
        subject = self.layout.copies_subject(uid)
        if after_seq:  # paging on: the copies before it were read (or are before the window)
            seq = after_seq + 1
        else:
            first = await io.first_since(subject, start_us - self._slack_us)
            if first is None:
                return
            seq = first
        copies = Copies(uid)
        while True:
            found = await io.page(subject, seq, page)
            for msg in found:
                if stop_before and records.sequence_of(msg) >= stop_before:
                    return
                recorded_us = records.recorded_us_of(msg)
                if recorded_us >= end_us + self._slack_us:
                    return  # every later copy is past the window too
                if start_us <= recorded_us < end_us:
                    yield copies.event(msg)
            if not found or nothing_left(found[-1]):
                return
            seq = records.sequence_of(found[-1]) + 1

    async def stats(self, uids: Sequence[str]) -> dict[str, ArchiveStats]:
        wanted = list(dict.fromkeys(uids))
        found = await asyncio.gather(*map(self._running().upkeep.totals, wanted))
        return {
            uid: ArchiveStats(totals.events, totals.bytes)
            for uid, (_, totals) in zip(wanted, found, strict=True)
        }

    # -- removing ------------------------------------------------------------------------------

    async def trim(self, uid: str, older_than: datetime) -> int:
        return await self._running().upkeep.trim(uid, to_us(older_than))

    async def drop(self, uid: str) -> int:
        return await self._running().upkeep.drop(uid)

    async def _erase(
        self, uids: Sequence[str], needle: bytes, matches: ArchiveEraseMatch
    ) -> list[ArchivedEvent]:
        upkeep = self._running().upkeep
        removed: list[ArchivedEvent] = []
        for uid in dict.fromkeys(uids):
            removed += await upkeep.erase(uid, needle, matches)
        return removed
