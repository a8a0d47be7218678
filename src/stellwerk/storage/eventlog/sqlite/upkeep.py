"""Trims and erasures of the embedded log, which any process may run beside the writer.

Both touch only indexed chunks, old enough that the writer no longer writes near them, and both
make their decision durable in the index (a commit with `synchronous=FULL`) before they change
the files: files are deleted only after the chunk rows that pointed into them are gone, and an
erasure's overwrites are recorded in `erasing` first, so that opening the log does them again if
the process died halfway (`redo_erasures`).

An erasure overwrites the erased bodies' first bytes before anything else (readers skip a body
that starts blank, so none ever reads half an erasure), then the attributes, then the rest.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from stellwerk.clock import from_us
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import ErasedEvent, EraseMatch, StoredEvent
from stellwerk.storage.eventlog.sqlite import chunks, index
from stellwerk.storage.eventlog.sqlite.dedup import key_digest
from stellwerk.storage.eventlog.sqlite.logfiles import LogFiles
from stellwerk.storage.eventlog.sqlite.reads import Place, Reader

TRIM_CHUNK: Final = 20_000
_encode_json: Final = msgspec.json.Encoder().encode
_halves: Final = struct.Struct("<qq")
_pieces_codec: Final = msgspec.msgpack.Encoder()
_decode_pieces: Final = msgspec.msgpack.Decoder(list[tuple[int, bytes]]).decode

# Chunks within `[?1, ?2)` that end by a bound: ?3 maps stream ids (as text) to the first
# position that stream keeps; streams not in it keep nothing below ?2.
_DELETE_CHUNKS_IN: Final = """
    DELETE FROM chunks WHERE position >= ?1 AND position < ?2
      AND position + count <= coalesce(?3 ->> ('$."' || stream || '"'), 9223372036854775807)
    RETURNING position, stream, count, file, offset, length
"""
_KEEP_ENTRY: Final = "INSERT OR REPLACE INTO dedup_kept (hash, tag, position) VALUES (?, ?, ?)"
# The newest mark stays: it carries the recorded time the next group must not go below.
_DELETE_MARKS_BELOW: Final = (
    "DELETE FROM marks WHERE position < ? AND position < (SELECT max(position) FROM marks)"
)


def durably(conn: sqlite3.Connection) -> None:
    """Make the connection's next commit durable against power loss (FULL), then NORMAL."""
    conn.execute("PRAGMA synchronous = FULL")


def relaxed(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA synchronous = NORMAL")


def trim_chunk(
    conn: sqlite3.Connection,
    files: LogFiles,
    *,
    cut_us: int,
    now_us: int,
    keep: Mapping[BusRef, int],
    start: int,
    window_us: int,
) -> tuple[int, int]:
    """Remove chunks recorded before `cut_us` among positions `[start, start + TRIM_CHUNK)`.

    Never below a position the dedup runs may still need to rebuild from (`flushed_below`).
    Returns how many events went and where the next step starts (0: done).
    """
    durably(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        cut = _first_position_since(conn, cut_us) or _next_position(conn)
        live = _first_live(conn, window_us, now_us)
        lowest = conn.execute("SELECT min(position) FROM chunks").fetchone()[0]
        if lowest is None or not cut:
            conn.execute("COMMIT")
            return 0, 0
        start = max(start, lowest)
        if start >= cut:
            conn.execute("COMMIT")
            return 0, 0
        bound = min(cut, start + TRIM_CHUNK)
        flushed_below = index.get_state(conn, "flushed_below", 1)
        streams = {
            BusRef(tenant, bus): stream
            for stream, tenant, bus, _ in conn.execute(index.SELECT_STREAMS)
        }
        kept = {str(streams[key]): at + 1 for key, at in keep.items() if key in streams}
        gone = conn.execute(_DELETE_CHUNKS_IN, (start, bound, _encode_json(kept).decode()))
        removed = 0
        for position, stream, count, file, offset, length in gone.fetchall():
            removed += count
            if live is not None and position + count > max(live, flushed_below):
                # Dedup entries the runs may lack outlive their trimmed events.
                owner = next(key for key, s in streams.items() if s == stream)
                chunk = chunks.decode(files.read(file, offset, length))
                _keep_entries(conn, owner, position, chunk, since=max(live, flushed_below))
        # Marks inside the dedup window stay (expiry tells live entries by them), and so do
        # those of kept chunks (windows are turned into positions by them).
        marks_bound = bound if live is None else min(bound, live)
        left = conn.execute("SELECT min(position) FROM chunks").fetchone()[0]
        if left is not None:
            marks_bound = min(marks_bound, left)
        conn.execute(_DELETE_MARKS_BELOW, (marks_bound,))
        in_use = conn.execute("SELECT min(file) FROM chunks").fetchone()[0]
        indexed_file = index.get_state(conn, "indexed_file", 0)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        relaxed(conn)
    # Only now may files go: the rows that pointed into them are durably gone. The file the
    # writer appends to, and any holding unindexed chunks, are at or after the high-water mark.
    below = min(in_use if in_use is not None else indexed_file, indexed_file)
    for number in files.numbers():
        if number < below:
            files.delete(number)
    return removed, (bound if bound < cut else 0)


def _keep_entries(
    conn: sqlite3.Connection,
    owner: BusRef,
    position: int,
    chunk: chunks.Chunk,
    since: int,
) -> None:
    tenant, bus = owner.tenant, owner.bus
    conn.executemany(
        _KEEP_ENTRY,
        [
            (*_halves.unpack(key_digest(tenant, bus, source, event_id)), position + i)
            for i, (event_id, source, _type, _subject) in enumerate(chunk.attributes)
            if position + i >= since and not chunk.erased(i)
        ],
    )


def _first_live(conn: sqlite3.Connection, window_us: int, now_us: int) -> int | None:
    """The first position inside the dedup window (None: no window, or nothing recorded)."""
    if window_us <= 0:
        return None
    last = conn.execute(index.LAST_MARK).fetchone()
    if last is None:
        return None
    since = max(now_us, last[1]) - window_us + 1
    return _first_position_since(conn, since) or _next_position(conn)


def _next_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(position + count) FROM chunks").fetchone()
    return int(row[0]) if row[0] is not None else 0


def _first_position_since(conn: sqlite3.Connection, moment_us: int) -> int:
    row = conn.execute(index.FIRST_MARK_SINCE, (moment_us,)).fetchone()
    return int(row[0]) if row else 0


# -- erasures ----------------------------------------------------------------------------------


class Found:
    """One chunk's events an erasure removes."""

    def __init__(self, place: Place, indexes: list[int], events: list[ErasedEvent]) -> None:
        self.place = place
        self.indexes = indexes
        self.events = events


def scan(
    reader: Reader, tenant: TenantName, bus: str, needle: bytes, matches: EraseMatch, upto: int
) -> Iterable[Found]:
    """The chunks of a bus holding events that `matches` (and contain `needle`), below `upto`."""
    for place in reader.places(tenant, bus):
        if place.position >= upto:
            break
        raw = reader.raw(place)
        if needle and needle not in raw:
            continue
        chunk = chunks.decode(raw)
        indexes: list[int] = []
        events: list[ErasedEvent] = []
        recorded = None
        for i, (event_id, source, event_type, subject) in enumerate(chunk.attributes):
            position = place.position + i
            if position >= upto or chunk.erased(i):
                continue
            body = chunk.body(i)
            if needle and needle not in body:
                continue
            if recorded is None:
                recorded = from_us(place.recorded_us)
            stored = StoredEvent(
                tenant, bus, position, event_id, source, event_type, subject, recorded, body
            )
            if matches(stored):
                indexes.append(i)
                events.append(ErasedEvent(tenant, bus, position, event_id, source))
        if indexes:
            yield Found(place, indexes, events)


def blank(conn: sqlite3.Connection, files: LogFiles, found: Found) -> None:
    """Erase a chunk's events: recorded durably, then overwritten in the file, then done."""
    place = found.place
    raw = files.read(place.file, place.offset, place.length)
    pieces = chunks.blanked(raw, found.indexes)
    durably(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT OR REPLACE INTO erasing (file, offset, pieces) VALUES (?, ?, ?)",
            (place.file, place.offset, _pieces_codec.encode(pieces)),
        )
        # Their keys outlive them: a re-sent erased event is still a duplicate in the window.
        conn.executemany(
            _KEEP_ENTRY,
            [
                (*_halves.unpack(key_digest(e.tenant, e.bus, e.source, e.id)), e.position)
                for e in found.events
            ],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        relaxed(conn)
    _overwrite(files, place.file, place.offset, pieces)
    conn.execute("DELETE FROM erasing WHERE file = ? AND offset = ?", (place.file, place.offset))


def _overwrite(files: LogFiles, file: int, offset: int, pieces: list[tuple[int, bytes]]) -> None:
    # The bodies' first bytes first: from then on readers skip those events.
    bodies = pieces[1:]
    files.overwrite(file, [(offset + at, data[:1]) for at, data in bodies])
    files.overwrite(file, [(offset + at, data) for at, data in pieces])


def redo_erasures(conn: sqlite3.Connection, files: LogFiles) -> None:
    """At open: finish erasures a stop cut short."""
    for file, offset, raw in conn.execute("SELECT file, offset, pieces FROM erasing").fetchall():
        _overwrite(files, file, offset, _decode_pieces(raw))
        conn.execute("DELETE FROM erasing WHERE file = ? AND offset = ?", (file, offset))


def rebuild_entries(
    conn: sqlite3.Connection, files: LogFiles, since: int
) -> list[tuple[bytes, int]]:
    """The dedup entries of the events stored from `since` on, erased ones included."""
    entries: list[tuple[bytes, int]] = []
    streams = {
        stream: (tenant, bus) for stream, tenant, bus, _ in conn.execute(index.SELECT_STREAMS)
    }
    rows = conn.execute(
        "SELECT stream, position, count, file, offset, length FROM chunks"
        " WHERE position + count > ? ORDER BY position",
        (since,),
    ).fetchall()
    for stream, position, _count, file, offset, length in rows:
        tenant, bus = streams[stream]
        chunk = chunks.decode(files.read(file, offset, length))
        for i, (event_id, source, _type, _subject) in enumerate(chunk.attributes):
            if position + i >= since and not chunk.erased(i):
                entries.append((key_digest(tenant, bus, source, event_id), position + i))
    pack = _halves.pack
    for hashed, tag, position in conn.execute(
        "SELECT hash, tag, position FROM dedup_kept WHERE position >= ?", (since,)
    ):
        entries.append((pack(hashed, tag), position))
    entries.sort(key=lambda entry: entry[1])
    return entries
