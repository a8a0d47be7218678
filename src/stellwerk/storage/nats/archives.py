"""The scale-out archive store on NATS JetStream: one stream of copies, a subject per archive.

Layout (`archive_records`): every copy of every archive is a message in the copies stream on its
archive's subject; a KV-shaped table holds each bus's archiver cursor and each archive's running
totals. One stream for all archives, not one per archive or per tenant: reads name an archive
only by its uid (no tenant), and a stream per archive would be a Raft group per archive in a
cluster. An archive is one subject, so window reads, trims and drops are per-subject requests.

`archive` is atomic enough in the way the delivery queue's `route` is: it publishes the copies
(each with a `Nats-Msg-Id` naming archive, bus and position), then adds them to each archive's
totals record, then moves the bus's cursor, each a compare-and-set on the record's last
sequence. An archiver that dies before the cursor moved archives the same events again from the
old cursor: the totals' `upto` (the highest position counted in) says which copies are stored
and counted already, and those are not published again; copies published but not yet counted
come back as duplicates inside the duplicate window. So nothing is stored or counted twice
and nothing is skipped, as long as the archiver comes back within `dedup_window` (ten minutes
by default) or got as far as the totals.

Window reads find the first copy recorded at `start - time_slack` by a binary search over the
subject (`StreamQueries.first_since`) and read on in sequence order until a copy recorded at
`end + time_slack`: recorded times come from several gateway processes, whose clocks may be
out of step by that much (see the event log). `seq` is the stream sequence, so paging goes on
by sequence. Trims read what they remove (for the totals), purge the subject below the first
copy recorded at the cut and delete the stragglers one by one; erasures delete single copies,
overwriting their bytes if `secure_erase`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Self

import structlog

from stellwerk.storage.archives import (
    DEFAULT_ARCHIVE_READ,
    ArchiveCursorConflict,
    ArchivedEvent,
    ArchiveStats,
    ArchiveStoreClosed,
    ArchiveStoreError,
    EraseMatch,
)
from stellwerk.storage.eventlog import StoredEvent
from stellwerk.storage.nats import records
from stellwerk.storage.nats.archive_io import ArchiveIO, Publish, unavailable_as_archive_error
from stellwerk.storage.nats.archive_records import (
    ArchiveCursor,
    ArchiveLayout,
    Copies,
    Totals,
    copy_headers,
    decode_cursor,
    decode_totals,
    encode,
)
from stellwerk.storage.nats.connection import Connection
from stellwerk.storage.nats.queries import nothing_left

DEFAULT_DEDUP_WINDOW: Final = timedelta(minutes=10)
SCAN_PAGE: Final = 1000
DELETES_AT_ONCE: Final = 64
log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Scan:
    """What a trim found: copies to purge (below `purge_below`) and stragglers to delete."""

    purge_below: int
    events: int
    bytes: int
    stragglers: list[tuple[int, int]]  # (seq, body bytes)


class JetStreamArchiveStore:
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
        self._io: ArchiveIO | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._io is not None:
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
        self._io = io

    async def close(self) -> None:
        io, self._io = self._io, None
        if io is not None:
            await io.conn.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def ping(self) -> None:
        io = self._running()
        with unavailable_as_archive_error():
            await io.conn.api(f"$JS.API.STREAM.INFO.{self.layout.table_stream}")

    def _running(self) -> ArchiveIO:
        if self._io is None:
            raise ArchiveStoreClosed("the archive store is not open")
        return self._io

    # -- the archiver's side -------------------------------------------------------------------

    async def cursor(self, tenant: str, bus: str) -> int:
        _, data = await self._running().record(self.layout.cursor_key(tenant, bus))
        return decode_cursor(data).position if data else 0

    async def archive(
        self,
        tenant: str,
        bus: str,
        position: int,
        entries: Sequence[tuple[str, StoredEvent]],
    ) -> None:
        io = self._running()
        for uid, event in entries:
            if (event.tenant, event.bus) != (tenant, bus):
                raise ValueError(
                    f"event {event.id!r} of {event.tenant}/{event.bus} is not of {tenant}/{bus}"
                    f" (archive {uid})"
                )
        key = self.layout.cursor_key(tenant, bus)
        cursor_seq, data = await io.record(key)
        current = decode_cursor(data).position if data else 0
        if position <= current:
            raise ArchiveCursorConflict(
                f"{tenant}/{bus} is archived up to {current}; cannot archive up to {position}"
            )
        # In position order, so that `seq` follows position within each archive.
        by_uid: dict[str, list[StoredEvent]] = {}
        for uid, event in sorted(entries, key=lambda entry: entry[1].position):
            if not current < event.position <= position:
                raise ArchiveCursorConflict(
                    f"event at {event.position} is not within {tenant}/{bus}'s"
                    f" ({current}, {position}]"
                )
            by_uid.setdefault(uid, []).append(event)
        totals = dict(zip(by_uid, await asyncio.gather(*map(self._totals, by_uid)), strict=True))
        copies = [
            Publish(self.layout.copies_subject(uid), event.body, copy_headers(uid, event))
            for uid, events in by_uid.items()
            for event in events
            if event.position > totals[uid][1].upto  # not stored and counted by an earlier try
        ]
        await io.publish_many(copies)
        await asyncio.gather(*(self._count_in(uid, events) for uid, events in by_uid.items()))
        if await io.put(key, encode(ArchiveCursor(position)), cursor_seq) is None:
            raise ArchiveCursorConflict(f"{tenant}/{bus}: another archiver moved the cursor")

    async def _totals(self, uid: str) -> tuple[int, Totals]:
        seq, data = await self._running().record(self.layout.totals_key(uid))
        return seq, decode_totals(data) if data else Totals()

    async def _change_totals(self, uid: str, change: Callable[[Totals], Totals | None]) -> None:
        """Compare-and-set `change(totals)` into the archive's record until it holds (None:
        nothing to change). Concurrent trims, erasures and archivers each get their turn."""
        io = self._running()
        while True:
            seq, totals = await self._totals(uid)
            changed = change(totals)
            if changed is None or changed == totals:
                return
            if await io.put(self.layout.totals_key(uid), encode(changed), seq) is not None:
                return

    async def _count_in(self, uid: str, events: Sequence[StoredEvent]) -> None:
        def add(totals: Totals) -> Totals | None:
            new = [e for e in events if e.position > totals.upto]
            if not new:
                return None
            size = sum(len(e.body) for e in new)
            return Totals(totals.events + len(new), totals.bytes + size, new[-1].position)

        await self._change_totals(uid, add)

    async def _count_out(self, uid: str, events: int, size: int) -> None:
        if events:
            await self._change_totals(
                uid, lambda t: Totals(max(0, t.events - events), max(0, t.bytes - size), t.upto)
            )

    # -- reading -------------------------------------------------------------------------------

    async def read_window(
        self,
        uid: str,
        start: datetime,
        end: datetime,
        after_seq: int = 0,
        limit: int = DEFAULT_ARCHIVE_READ,
    ) -> list[ArchivedEvent]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        out: list[ArchivedEvent] = []
        async for event in self._window(uid, start, end, after_seq, limit):
            out.append(event)
            if len(out) == limit:
                break
        return out

    async def count_window(self, uid: str, start: datetime, end: datetime) -> int:
        count = 0
        async for _ in self._window(uid, start, end, 0, SCAN_PAGE):
            count += 1
        return count

    async def _window(
        self, uid: str, start: datetime, end: datetime, after_seq: int, page: int
    ) -> AsyncIterator[ArchivedEvent]:
        """The archive's copies recorded in `[start, end)` above `after_seq`, in seq order."""
        io = self._running()
        start_us, end_us = records.to_us(start), records.to_us(end)
        if start_us >= end_us:
            return
        subject = self.layout.copies_subject(uid)
        first = await io.first_since(subject, start_us - self._slack_us)
        if first is None:
            return
        seq = max(after_seq + 1, first)
        copies = Copies(uid)
        while True:
            found = await io.page(subject, seq, page)
            for msg in found:
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
        found = await asyncio.gather(*map(self._totals, wanted))
        return {
            uid: ArchiveStats(totals.events, totals.bytes)
            for uid, (_, totals) in zip(wanted, found, strict=True)
        }

    # -- removing ------------------------------------------------------------------------------

    async def trim(self, uid: str, older_than: datetime) -> int:
        io = self._running()
        subject = self.layout.copies_subject(uid)
        scan = await self._scan_older(subject, records.to_us(older_than))
        if scan is None:
            return 0
        purged = await io.purge(subject, scan.purge_below) if scan.purge_below else 0
        deleted = await self._delete([seq for seq, _ in scan.stragglers], erase=False)
        removed = purged + len(deleted)
        if purged == scan.events:
            gone = set(deleted)
            size = scan.bytes + sum(n for seq, n in scan.stragglers if seq in gone)
            await self._count_out(uid, removed, size)
        else:  # an erasure took some of them meanwhile: count again
            await self._recount(uid)
        return removed

    async def _scan_older(self, subject: str, cut_us: int) -> _Scan | None:
        """Read the copies recorded before `cut_us`: the run from the start up to the first
        one recorded at the cut or later, then the stragglers up to `time_slack` past it."""
        io = self._running()
        border = events = size = last = 0  # border: the first copy recorded at the cut or later
        stragglers: list[tuple[int, int]] = []
        past = False
        while not past:
            found = await io.page(subject, last + 1, SCAN_PAGE)
            for msg in found:
                recorded_us, last = records.recorded_us_of(msg), records.sequence_of(msg)
                if recorded_us >= cut_us + self._slack_us:
                    border, past = border or last, True
                    break
                if recorded_us >= cut_us:
                    border = border or last
                elif border:
                    stragglers.append((last, len(msg.data)))
                else:
                    events, size = events + 1, size + len(msg.data)
            if not found or nothing_left(found[-1]):
                break
        if not events and not stragglers:
            return None
        return _Scan((border or last + 1) if events else 0, events, size, stragglers)

    async def drop(self, uid: str) -> int:
        purged = await self._running().purge(self.layout.copies_subject(uid))
        await self._change_totals(uid, lambda t: Totals(0, 0, t.upto))
        return purged

    async def erase(
        self, uids: Sequence[str], needle: bytes, matches: EraseMatch
    ) -> list[ArchivedEvent]:
        if not needle:
            raise ValueError("an erasure needs a non-empty needle")
        removed: list[ArchivedEvent] = []
        for uid in dict.fromkeys(uids):
            removed += await self._erase_archive(uid, needle, matches)
        return removed

    async def _erase_archive(
        self, uid: str, needle: bytes, matches: EraseMatch
    ) -> list[ArchivedEvent]:
        """Scan the archive to its end; delete the finds a page at a time."""
        io = self._running()
        subject = self.layout.copies_subject(uid)
        copies = Copies(uid)
        removed: list[ArchivedEvent] = []
        seq = 1
        while True:
            found = await io.page(subject, seq, SCAN_PAGE)
            chosen = [copies.event(m) for m in found if needle in m.data]
            chosen = [event for event in chosen if matches(event)]
            gone = set(await self._delete([e.seq for e in chosen], erase=self._secure_erase))
            chosen = [event for event in chosen if event.seq in gone]
            await self._count_out(uid, len(chosen), sum(len(e.body) for e in chosen))
            removed += chosen
            if not found or nothing_left(found[-1]):
                return removed
            seq = records.sequence_of(found[-1]) + 1

    async def _delete(self, seqs: Sequence[int], *, erase: bool) -> list[int]:
        """Delete these copies; return those that were there to delete."""
        io = self._running()
        deleted: list[int] = []
        for first in range(0, len(seqs), DELETES_AT_ONCE):
            chunk = seqs[first : first + DELETES_AT_ONCE]
            done = await asyncio.gather(*(io.delete(seq, erase=erase) for seq in chunk))
            deleted += [seq for seq, ok in zip(chunk, done, strict=True) if ok]
        return deleted

    async def _recount(self, uid: str) -> None:
        """Set the archive's totals from what its subject holds (keeping `upto`)."""
        io = self._running()
        subject = self.layout.copies_subject(uid)
        while True:
            seq, totals = await self._totals(uid)
            events = size = 0
            start = 1
            while True:
                found = await io.page(subject, start, SCAN_PAGE)
                events += len(found)
                size += sum(len(m.data) for m in found)
                if not found or nothing_left(found[-1]):
                    break
                start = records.sequence_of(found[-1]) + 1
            counted = Totals(events, size, totals.upto)
            if await io.put(self.layout.totals_key(uid), encode(counted), seq) is not None:
                return
