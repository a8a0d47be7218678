"""Erasure in the embedded log: find an erasure's events on a reader, then blank them in the writer.

An erased entry keeps its place, so positions never move (docs/storage.md).
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import msgspec

from stellwerk.clock import from_us
from stellwerk.seams import ErasedEvent, EraseMatch, StoredEvent
from stellwerk.storage.eventlog.sqlite.segments import Meta, decode_meta, pack_ends, unpack_ends

SCAN_EVENTS: Final = 20_000  # events one scan step looks at before its finds are erased
JOB_BYTES: Final = 1 << 20  # segment bodies one writer transaction rewrites (at least a segment)
BLANK: Final = ("", "", "", None)
_encode_meta: Final = msgspec.msgpack.Encoder().encode

_STREAMS: Final = "SELECT stream, bus, last_position FROM streams WHERE tenant = ?"
_SCAN: Final = """
    SELECT position, count, recorded_us, meta, ends, bodies FROM segments
    WHERE stream = ? AND position >= ? AND position <= ? ORDER BY stream, position
"""
_SEGMENT: Final = "SELECT count, meta, ends, bodies FROM segments WHERE position = ? AND stream = ?"
_REWRITE: Final = "UPDATE segments SET meta = ?, ends = ?, bodies = ? WHERE position = ?"
_FORGET_SPILLED: Final = (
    "DELETE FROM dedup_spill WHERE position IN (SELECT value FROM json_each(?))"
)


@dataclass(frozen=True, slots=True)
class Stream:
    """A bus of the tenant as the log numbers it, and its newest position when the erase began."""

    stream: int
    bus: str
    last_position: int


def streams_of(conn: sqlite3.Connection, tenant: str, bus: str | None) -> list[Stream]:
    return [
        Stream(stream, name, last)
        for stream, name, last in conn.execute(_STREAMS, (tenant,))
        if bus is None or name == bus
    ]


@dataclass(slots=True)
class Found:
    """What one scan step found: the events, by the segment (its position) that holds them."""

    next_position: int  # where the next step starts; 0 once the bus is done
    events: list[ErasedEvent] = field(default_factory=list)
    segments: dict[int, list[int]] = field(default_factory=dict)  # position -> entry indexes
    sizes: dict[int, int] = field(default_factory=dict)  # position -> its bodies' bytes

    def jobs(self, max_bytes: int = JOB_BYTES) -> Iterator[dict[int, list[int]]]:
        """The segments to rewrite, grouped so that a group rewrites about `max_bytes`."""
        job: dict[int, list[int]] = {}
        size = 0
        for position, indexes in self.segments.items():
            if job and size + self.sizes[position] > max_bytes:
                yield job
                job, size = {}, 0
            job[position] = indexes
            size += self.sizes[position]
        if job:
            yield job


def scan(
    conn: sqlite3.Connection,
    tenant: str,
    stream: Stream,
    start: int,
    needle: bytes,
    matches: EraseMatch,
    max_events: int = SCAN_EVENTS,
) -> Found:
    """Look at the bus's events from `start` on, about `max_events` of them, for matching ones.

    A segment whose bodies do not contain `needle` at all is passed over without decoding.
    """
    found = Found(next_position=0)
    looked = 0
    cursor = conn.execute(_SCAN, (stream.stream, start, stream.last_position))
    try:
        for position, count, recorded_us, meta, ends, bodies in cursor:
            looked += count
            if needle in bodies:
                recorded_time = from_us(recorded_us)
                offsets = unpack_ends(ends)
                begin = 0
                for index, (event_id, source, event_type, subject) in enumerate(decode_meta(meta)):
                    end = offsets[index]
                    body = bodies[begin:end]
                    begin = end
                    if not body or needle not in body:
                        continue
                    event = StoredEvent(
                        tenant, stream.bus, position + index, event_id, source, event_type,
                        subject, recorded_time, body,
                    )  # fmt: skip
                    if matches(event):
                        found.events.append(
                            ErasedEvent(tenant, stream.bus, event.position, event_id, source)
                        )
                        found.segments.setdefault(position, []).append(index)
                        found.sizes[position] = len(bodies)
            if looked >= max_events:
                found.next_position = position + 1
                break
    finally:
        cursor.close()
    return found


def blank(conn: sqlite3.Connection, stream: int, segments: dict[int, list[int]]) -> list[int]:
    """Blank these entries of the stream's segments; return the positions actually erased.

    An entry that is already blank, or a segment trimmed since the scan, is passed over.
    """
    erased: list[int] = []
    (secure,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        _blank_segments(conn, stream, segments, erased)
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure)}")
    if erased:
        conn.execute(_FORGET_SPILLED, (msgspec.json.encode(erased),))
    return erased


def _blank_segments(
    conn: sqlite3.Connection, stream: int, segments: dict[int, list[int]], erased: list[int]
) -> None:
    for position, indexes in segments.items():
        row = conn.execute(_SEGMENT, (position, stream)).fetchone()
        if row is None:
            continue
        count, meta, ends, bodies = row
        attributes: Meta = decode_meta(meta)
        offsets = unpack_ends(ends)
        gone = set(indexes)
        kept: list[bytes] = []
        new_ends = array("I")
        start = total = 0
        for index in range(count):
            end = offsets[index]
            if index in gone and end > start:
                attributes[index] = BLANK
                erased.append(position + index)
            else:
                kept.append(bodies[start:end])
                total += end - start
            new_ends.append(total)
            start = end
        conn.execute(
            _REWRITE, (_encode_meta(attributes), pack_ends(new_ends), b"".join(kept), position)
        )
