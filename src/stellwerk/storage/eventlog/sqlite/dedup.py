"""The newest dedup entries, held in memory and written to `dedup_keys` in bulk, in key order.

One at a time, each entry dirtied a random page of the dedup tree per event; in bulk and sorted,
a page is written about once per flush (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from typing import Final

import msgspec

from stellwerk.storage.eventlog.sqlite import schema

FLUSH_ENTRIES: Final = 20_000
# Each group's transaction writes a slice of the flush under way, as many entries as the group
# stores (at least this many), so flushing keeps pace with appends without a transaction (and an
# fsync, and a wait for the next group) of its own.
MIN_SLICE: Final = 64
_encode_json: Final = msgspec.json.Encoder().encode
# The two little-endian signed 64-bit halves of a digest in one call (two `int.from_bytes` and
# two slices cost a third more, per event, in the writer thread).
_halves: Final = struct.Struct("<qq").unpack

Entry = tuple[int, int]  # (position, tag)
Row = tuple[int, int, int]  # (hash, position, tag)


def key_digest(stream: int, source: str, event_id: str) -> tuple[int, int]:
    """The dedup hash and tag of a key: two signed 64-bit halves of a 128-bit BLAKE2b digest.

    Stable across processes, unlike `hash`; the length prefix keeps `(a:b, c)` and `(a, b:c)` apart.
    """
    text = f"{stream}:{len(source)}:{source}{event_id}".encode("utf-8", "surrogatepass")
    hashed, tag = _halves(hashlib.blake2b(text, digest_size=16).digest())
    return hashed, tag


class RecentKeys:
    """Dedup entries not yet in `dedup_keys`; used only by the writer thread."""

    def __init__(self, *, flush_entries: int = FLUSH_ENTRIES) -> None:
        self.entries: dict[int, Entry] = {}
        self.flushed_below = 1
        self._flush_entries = flush_entries
        self._flushing: list[Row] = []
        self._flush_upto = 0
        self._done = 0

    def load(self, conn: sqlite3.Connection, rebuild: list[tuple[int, int, str, str]]) -> None:
        """Read where flushing stopped; `rebuild` gives `(position, stream, source, id)` of the
        events stored since then, in position order (see `GroupCommitter.open`)."""
        row = conn.execute(schema.DEDUP_STATE).fetchone()
        self.flushed_below = row[0] if row else 1
        spilled = {p for (p,) in conn.execute(schema.SPILLED_SINCE, (self.flushed_below,))}
        for position, stream, source, event_id in rebuild:
            # An erased event's key is blank; the erasure wrote its entry to the table.
            if position in spilled or not event_id:
                continue
            hashed, tag = key_digest(stream, source, event_id)
            self.entries[hashed] = (position, tag)

    @property
    def flush_upto(self) -> int:
        """Where the flush under way started: all entries below it are written once it ends."""
        return self._flush_upto

    def lookup(self, hashed: int) -> Entry | None:
        return self.entries.get(hashed)

    def add(self, rows: list[Row]) -> None:
        """After a group's commit: its stored events' entries."""
        entries = self.entries
        for hashed, position, tag in rows:
            entries[hashed] = (position, tag)

    def next_slice(self, count: int, next_position: int, first_live: int) -> tuple[list[Row], bool]:
        """The next `count` entries to write in the group's transaction, and whether they end the
        flush; starts a flush when one is due. Nothing moves until `written` confirms them.

        Entries below `first_live` have expired: they are dropped, never written.
        """
        if not self._flushing:
            if len(self.entries) < self._flush_entries:
                return [], False
            self._drop_expired(first_live)
            self._flushing = sorted((h, p, t) for h, (p, t) in self.entries.items())
            self._flush_upto = next_position
            self._done = 0
        end = self._done + count
        return self._flushing[self._done : end], end >= len(self._flushing)

    def written(self, count: int, last: bool) -> None:
        """After the commit that wrote a slice from `next_slice`."""
        self._done += count
        if last and self._flushing:
            entries = self.entries
            for hashed, position, tag in self._flushing:
                if entries.get(hashed) == (position, tag):  # not replaced meanwhile
                    del entries[hashed]
            self.flushed_below = self._flush_upto
            self._flushing = []

    def flush_all(self, conn: sqlite3.Connection, next_position: int, first_live: int) -> None:
        """On close: every live entry to the table, so the next start has nothing to rebuild."""
        self._drop_expired(first_live)
        rows = sorted((h, p, t) for h, (p, t) in self.entries.items())
        conn.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                conn.execute(schema.UPSERT_HASHES, (_encode_json(rows),))
            conn.execute(schema.SET_DEDUP_STATE, (next_position,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.entries.clear()
        self._flushing = []
        self._done = 0
        self.flushed_below = next_position

    def _drop_expired(self, first_live: int) -> None:
        expired = [h for h, (p, _) in self.entries.items() if p < first_live]
        for hashed in expired:
            del self.entries[hashed]

    def write_below(self, conn: sqlite3.Connection, position: int) -> None:
        """In a trim's transaction: entries of events about to be trimmed go to the table now,
        since a restart could no longer rebuild them from their events."""
        rows = [(h, p, t) for h, (p, t) in self.entries.items() if p < position]
        if rows:
            conn.execute(schema.UPSERT_HASHES, (_encode_json(rows),))
