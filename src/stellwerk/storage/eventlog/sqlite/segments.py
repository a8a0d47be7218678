"""A group's events laid out as segment rows (see `schema.py`), and those rows read back.

Pure data work for the writer thread: positions, dedup entries, bodies with Stellwerk's
extensions, the MessagePack of attributes and the offsets of each body. Also the one-time move
of a log of the row-per-event layout into segments.
"""

from __future__ import annotations

import sqlite3
import sys
from array import array
from itertools import accumulate
from typing import Any, Final

import msgspec

from stellwerk.seams import AppendResult, AppendStatus, NewEvent
from stellwerk.storage.eventlog.sqlite import schema
from stellwerk.storage.eventlog.sqlite.dedup import key_digest

LEGACY_CHUNK: Final = 10_000
_encode_json: Final = msgspec.json.Encoder().encode
_encode_meta: Final = msgspec.msgpack.Encoder().encode
Meta = list[tuple[str, str, str, str | None]]
decode_meta: Final = msgspec.msgpack.Decoder(Meta).decode
DedupKey = tuple[int, str, str]


class GroupPlan:
    """One group's events laid out as segments: positions, bodies, dedup entries and results."""

    def __init__(
        self, events: list[NewEvent], streams: list[int], first_position: int, recorded: bytes
    ) -> None:
        self.events = events
        self.streams = streams
        self.keys: list[DedupKey] = [
            (s, e.source, e.id) for s, e in zip(streams, events, strict=True)
        ]
        digests = [key_digest(*key) for key in self.keys]
        self.hashes = [d[0] for d in digests]
        self.tags = [d[1] for d in digests]
        self.earlier: dict[int, int] = {}
        self.hash_taken: set[int] = set()
        self.next_position = first_position
        self.recorded = recorded
        self.results: list[AppendResult] = []
        self.segments: list[tuple[int, int, list[int]]] = []  # (position, stream, indexes)
        self.hash_rows: list[tuple[int, int, int]] = []
        self.spill_rows: list[tuple[int, int, str, str]] = []
        self.last: dict[int, int] = {}

    def assign(self) -> None:
        """Give stored events their positions in order; a run of one bus's events is a segment."""
        positions: list[int] = [0] * len(self.events)
        duplicate = [False] * len(self.events)
        seen: dict[DedupKey, int] = {}
        position = self.next_position
        run: list[int] = []
        run_stream = -1
        for index, key in enumerate(self.keys):
            earlier = self.earlier.get(index) or seen.get(key)
            if earlier is not None:
                positions[index] = earlier
                duplicate[index] = True
                continue
            stream = key[0]
            if stream != run_stream or len(run) == schema.SEGMENT_EVENTS:
                if run:
                    self.segments.append((positions[run[0]], run_stream, run))
                run, run_stream = [], stream
            run.append(index)
            seen[key] = position
            positions[index] = position
            hashed = self.hashes[index]
            if hashed in self.hash_taken:
                self.spill_rows.append((position, stream, key[1], key[2]))
            else:
                self.hash_taken.add(hashed)
                self.hash_rows.append((hashed, position, self.tags[index]))
            self.last[stream] = position
            position += 1
        if run:
            self.segments.append((positions[run[0]], run_stream, run))
        self.next_position = position
        self.results = [
            AppendResult(AppendStatus.DUPLICATE if dup else AppendStatus.STORED, position)
            for dup, position in zip(duplicate, positions, strict=True)
        ]

    def segment_rows(self, now_us: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        events = self.events
        for position, _stream, chunk in self.segments:
            first = events[chunk[0]]
            suffix = _owned_suffix(first.tenant, first.bus, self.recorded)
            bodies = [events[i].body[:-1] + suffix for i in chunk]
            meta = [
                (events[i].id, events[i].source, events[i].type, events[i].subject) for i in chunk
            ]
            ends = array("I", accumulate(map(len, bodies)))
            rows.append(
                (
                    position,
                    _stream,
                    len(chunk),
                    now_us,
                    _encode_meta(meta),
                    pack_ends(ends),
                    b"".join(bodies),
                )
            )
        return rows


def pack_ends(ends: array[int]) -> bytes:
    if ends.itemsize != 4:
        raise RuntimeError("this platform's array('I') is not 32 bits wide")
    if sys.byteorder != "little":
        ends.byteswap()
    return ends.tobytes()


def unpack_ends(raw: bytes) -> array[int]:
    ends = array("I")
    ends.frombytes(raw)
    if sys.byteorder != "little":
        ends.byteswap()
    return ends


def migrate_legacy(conn: sqlite3.Connection) -> None:
    """Move a log of the row-per-event layout into segments (one per old row), once."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "events" not in tables:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        after = 0
        while rows := conn.execute(schema.LEGACY_EVENTS, (after, LEGACY_CHUNK)).fetchall():
            conn.executemany(
                schema.INSERT_SEGMENT,
                [
                    (
                        p,
                        stream,
                        1,
                        rec,
                        _encode_meta([(i, src, t, subj)]),
                        pack_ends(array("I", [len(body)])),
                        body,
                    )
                    for p, stream, rec, i, src, t, subj, body in rows
                ],
            )
            after = rows[-1][0]
        last_event = after
        if "dedup" in tables:
            after = 0
            while rows := conn.execute(schema.LEGACY_DEDUP, (after, LEGACY_CHUNK)).fetchall():
                taken = set()
                for position, stream, source, event_id in rows:
                    hashed, tag = key_digest(stream, source, event_id)
                    exists = conn.execute(
                        "SELECT 1 FROM dedup_keys WHERE hash = ?", (hashed,)
                    ).fetchone()
                    if exists or hashed in taken:
                        conn.execute(schema.UPSERT_SPILLED, (position, stream, source, event_id))
                    else:
                        taken.add(hashed)
                        conn.execute(schema.UPSERT_HASH, (hashed, position, tag))
                after = rows[-1][0]
        # Every entry is in the table now: nothing to rebuild from the events.
        conn.execute(schema.SET_DEDUP_STATE, (last_event + 1,))
        for table in schema.LEGACY_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _owned_suffix(tenant: str, bus: str, recorded: bytes) -> bytes:
    """The end of a stored body: Stellwerk's extensions, last so that they win over any copies."""
    return (
        b',"tenant":'
        + _encode_json(tenant)
        + b',"bus":'
        + _encode_json(bus)
        + b',"recordedtime":"'
        + recorded
        + b'"}'
    )
