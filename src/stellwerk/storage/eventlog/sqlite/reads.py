"""Reading the log: the index for what it covers, the files themselves for the newest chunks.

The index lags the files by up to one index interval. Reads take the indexed chunks from it and
then the chunks between its high-water mark and the durable end (`head.py`), which each process
learns by reading their headers once (`Tail`). Chunks are read with `pread`; a body whose first
byte is blank was erased and is skipped.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantName
from stellwerk.seams import StoredEvent
from stellwerk.storage.eventlog.sqlite import chunks, index
from stellwerk.storage.eventlog.sqlite.head import Head
from stellwerk.storage.eventlog.sqlite.logfiles import LogFiles

NO_LIMIT: Final = 2**63 - 1
# Enough of a chunk to hold its tenant's and bus's names (at most 64 characters each).
_OWNER_BYTES: Final = chunks.HEADER.size + 2 * (2 + 4 * 64)


class Place(NamedTuple):
    """Where a chunk lies, and what it holds."""

    position: int
    events: int
    recorded_us: int
    file: int
    offset: int
    length: int


class TailChunk(NamedTuple):
    tenant: TenantName
    bus: str
    place: Place


@dataclass(frozen=True)
class Mark:
    """A high-water mark: every chunk before `(file, end)` is indexed (or in the tail)."""

    file: int
    end: int


class Tail:
    """The chunks of one process's view between the index's high-water mark and the head.

    Each header is read once per process: the list grows as the head moves and drops what the
    index has taken in since. Thread-safe.
    """

    def __init__(self, files: LogFiles, head: Head) -> None:
        self._files = files
        self._head = head
        self._lock = threading.Lock()
        self._chunks: list[TailChunk] = []
        self._scanned = Mark(1, 0)  # where the next header is read

    def chunks(self, indexed: Mark, after: int = 0) -> list[TailChunk]:
        """The chunks from `indexed` up to the durable end, oldest first; with `after`, only
        those that hold a position above it.

        Chunks lie in the files in the order of their positions, so both cuts are bisections:
        a tail of a few hundred chunks (the index takes them in every half second or so) costs
        a read no walk over all of them.
        """
        head_file, head_end = self._head.load()
        with self._lock:
            if (self._scanned.file, self._scanned.end) < (indexed.file, indexed.end):
                self._chunks, self._scanned = [], indexed
            else:
                at = (indexed.file, indexed.end)
                del self._chunks[: bisect.bisect_left(self._chunks, at, key=_place_of)]
            self._extend(head_file, head_end)
            return self._chunks[bisect.bisect_right(self._chunks, after, key=_last_of) :]

    def _extend(self, head_file: int, head_end: int) -> None:
        file, offset = self._scanned.file, self._scanned.end
        while (file, offset) < (head_file, head_end):
            end = head_end if file == head_file else self._files.size(file)
            if offset >= end:
                file, offset = file + 1, 0
                continue
            raw_head = self._files.read(file, offset, chunks.HEADER.size)
            head = chunks.read_header(raw_head)
            raw = self._files.read(file, offset, min(head.size, _OWNER_BYTES))
            tenant, bus = chunks.owner(raw)
            place = Place(head.position, head.events, head.recorded_us, file, offset, head.size)
            self._chunks.append(TailChunk(tenant, bus, place))
            offset += head.size
        self._scanned = Mark(file, offset)


def _place_of(chunk: TailChunk) -> tuple[int, int]:
    return chunk.place.file, chunk.place.offset


def _last_of(chunk: TailChunk) -> int:
    return chunk.place.position + chunk.place.events - 1


class Reader:
    """Reads for one thread: its own index connection, the process's files and tail."""

    def __init__(self, conn: sqlite3.Connection, files: LogFiles, tail: Tail) -> None:
        self._conn = conn
        self._files = files
        self._tail = tail

    def read(
        self, tenant: TenantName, bus: str, after: int, before: int, limit: int
    ) -> list[StoredEvent]:
        """Up to `limit` events of a bus at positions in `(after, before)`, in log order."""
        out: list[StoredEvent] = []
        conn = self._conn
        conn.execute("BEGIN")  # one snapshot for the mark and the chunks
        try:
            mark = _mark(conn)
            row = conn.execute(index.STREAM_OF, (tenant, bus)).fetchone()
            if row is not None:
                for place in conn.execute(index.READ_CHUNKS, (row[0], after, before)):
                    if self._take(out, tenant, bus, Place(*place), after, before, limit):
                        return out
        finally:
            conn.execute("COMMIT")
        for chunk in self._tail.chunks(mark, after):
            if (chunk.tenant, chunk.bus) != (tenant, bus):
                continue
            place = chunk.place
            if place.position + place.events - 1 <= after:
                continue
            if place.position >= before:
                break
            if self._take(out, tenant, bus, place, after, before, limit):
                break
        return out

    def indexed(self) -> tuple[int, int]:
        """The index's high-water mark, `(file, end)`."""
        mark = _mark(self._conn)
        return mark.file, mark.end

    def last_position(self, tenant: TenantName, bus: str) -> int:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            mark = _mark(conn)
            row = conn.execute(index.LAST_POSITION, (tenant, bus)).fetchone()
        finally:
            conn.execute("COMMIT")
        last = int(row[0]) if row else 0
        for chunk in reversed(self._tail.chunks(mark, last)):  # the newest of the bus's is it
            if (chunk.tenant, chunk.bus) == (tenant, bus):
                return chunk.place.position + chunk.place.events - 1
        return last

    def first_position_since(self, moment_us: int) -> int | None:
        """The first position recorded at or after a time (None: nothing is, yet)."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            mark = _mark(conn)
            row = conn.execute(index.FIRST_MARK_SINCE, (moment_us,)).fetchone()
        finally:
            conn.execute("COMMIT")
        if row is not None:
            return int(row[0])
        for chunk in self._tail.chunks(mark):
            if chunk.place.recorded_us >= moment_us:
                return chunk.place.position
        return None

    def buses(self, tenant: TenantName) -> list[str]:
        """The buses of a tenant that have events (for erasures across all of them)."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            mark = _mark(conn)
            found = [
                b for (b,) in conn.execute("SELECT bus FROM streams WHERE tenant = ?", (tenant,))
            ]
        finally:
            conn.execute("COMMIT")
        for chunk in self._tail.chunks(mark):
            if chunk.tenant == tenant and chunk.bus not in found:
                found.append(chunk.bus)
        return found

    def places(self, tenant: TenantName, bus: str) -> Iterable[Place]:
        """Every chunk of a bus, oldest first (for erasures)."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            mark = _mark(conn)
            row = conn.execute(index.STREAM_OF, (tenant, bus)).fetchone()
            found = (
                [Place(*p) for p in conn.execute(index.READ_CHUNKS, (row[0], 0, NO_LIMIT))]
                if row is not None
                else []
            )
        finally:
            conn.execute("COMMIT")
        found += [c.place for c in self._tail.chunks(mark) if (c.tenant, c.bus) == (tenant, bus)]
        return found

    def raw(self, place: Place) -> bytes:
        return self._files.read(place.file, place.offset, place.length)

    def chunk(self, place: Place) -> chunks.Chunk:
        return chunks.decode(self.raw(place))

    def _take(
        self,
        out: list[StoredEvent],
        tenant: TenantName,
        bus: str,
        place: Place,
        after: int,
        before: int,
        limit: int,
    ) -> bool:
        """Add a chunk's events in `(after, before)` to `out`; True once `out` is full."""
        first = max(0, after + 1 - place.position)
        last = min(place.events, before - place.position)
        if first >= last:
            return False
        chunk = self.chunk(place)
        recorded = from_us(place.recorded_us)
        ends, bodies, attributes = chunk.ends, chunk.bodies, chunk.attributes
        start = ends[first - 1] if first else 0
        for i in range(first, last):
            end = ends[i]
            if bodies[start] != chunks.BLANK:
                if len(out) == limit:
                    return True
                event_id, source, event_type, subject = attributes[i]
                out.append(
                    StoredEvent(
                        tenant,
                        bus,
                        place.position + i,
                        event_id,
                        source,
                        event_type,
                        subject,
                        recorded,
                        bytes(bodies[start:end]),
                    )
                )
            start = end
        return len(out) >= limit


def _mark(conn: sqlite3.Connection) -> Mark:
    return Mark(index.get_state(conn, "indexed_file", 1), index.get_state(conn, "indexed_end", 0))


def window_bounds(reader: Reader, start: datetime, end: datetime) -> tuple[int, int] | None:
    """The positions `(after, before)` of a time window, or None when it holds nothing."""
    start_us, end_us = to_us(start), to_us(end)
    if start_us >= end_us:
        return None
    first = reader.first_position_since(start_us)
    if first is None:
        return None
    beyond = reader.first_position_since(end_us)
    return first - 1, beyond if beyond is not None else NO_LIMIT
