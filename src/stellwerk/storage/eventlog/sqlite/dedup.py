"""Dedup entries: the newest in memory, the older ones in sorted runs on disk, written once.

An entry is a key's 128-bit digest and the position of the event stored under it. Entries
written one by one into a tree keyed by digest land on random pages: every event would dirty a
page of its own. Here they are written only in bulk and only in order:

- `recent` holds the entries of the newest events in a dict (the writer thread's);
- once it holds `run_entries`, it is frozen and the indexer thread writes it out as a *run*:
  its entries sorted by digest and packed into blocks of `BLOCK_ENTRIES` (a row of
  `dedup_blocks` each, keyed by its first digest's prefix), under a run number larger than
  any before, so the rows go to the end of the table, page after page. A row per block rather
  than per entry: a run costs a few hundred row inserts, not tens of thousands (docs/storage.md);
- runs are grouped into *epochs*, each with one Bloom filter in memory, so a key is looked for on
  disk only in the runs of an epoch whose filter may hold it. An epoch's filter is made for as
  many keys as the window holds when it opens, up to `epoch_entries`: a quiet log keeps small
  filters, and a young one's double;
- an epoch whose newest entry has left the window is deleted.

A crash loses nothing: the events themselves are durable, and `flushed_below` says from which
position on entries may be missing from the runs; opening the log rebuilds those from the events.
A closed epoch's filter is stored with it; an open epoch's is rebuilt from its runs. Runs an
earlier version wrote a row per entry (`dedup_entries`) are packed into blocks when the log opens.

The writer thread looks keys up and adds entries; the indexer thread writes runs and publishes
epochs. A frozen dict is dropped only once its run's epoch filter holds its keys, so a lookup
never misses an entry in between.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import sys
import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias

import msgspec

from stellwerk.refs import TenantName
from stellwerk.seams import NewEvent
from stellwerk.storage.eventlog.sqlite.bloom import Bloom, masks

# A group's keys as its filter check made them: their blocks (the digests' first halves) and
# their masks, in the group's order.
GroupMasks: TypeAlias = "tuple[array[int], list[int]]"

RUN_ENTRIES: Final = 65_536
EPOCH_ENTRIES: Final = 4 * 1024 * 1024
EXPIRE_ROWS: Final = 8_192
BLOCK_ENTRIES: Final = 128  # a block of 128 entries is 3 KiB: one row within one 4 KiB page
DIGEST_BYTES: Final = 16
_ENTRY_BYTES: Final = DIGEST_BYTES + 8
_FILL_SLICE: Final = 4_096
_halves: Final = struct.Struct("<qq")
_encode_json: Final = msgspec.json.Encoder().encode

DDL: Final = (
    # A block: its digests in order, then their positions (signed 64-bit, little-endian).
    # `prefix` is the first digest's first 8 bytes as a signed integer in the digests' order.
    """CREATE TABLE IF NOT EXISTS dedup_blocks (
        run INTEGER NOT NULL,
        prefix INTEGER NOT NULL,
        entries BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS dedup_blocks_by_key ON dedup_blocks (run, prefix)",
    # Runs as an earlier version wrote them, a row per entry: packed into blocks on open.
    """CREATE TABLE IF NOT EXISTS dedup_entries (
        run INTEGER NOT NULL,
        hash INTEGER NOT NULL,
        tag INTEGER NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (run, hash, tag)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS dedup_epochs (
        epoch INTEGER PRIMARY KEY,
        first_run INTEGER NOT NULL,
        last_run INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        last_position INTEGER NOT NULL,
        filter BLOB
    )""",
)
_INSERT_BLOCK: Final = "INSERT INTO dedup_blocks (run, prefix, entries) VALUES (?, ?, ?)"
# For each asked `[index, run, prefix]`: the block of that run that would hold the key.
_FIND: Final = """
    SELECT k.value ->> 0, (
        SELECT b.entries FROM dedup_blocks AS b
        WHERE b.run = k.value ->> 1 AND b.prefix <= k.value ->> 2
        ORDER BY b.prefix DESC LIMIT 1
    ) FROM json_each(?1) AS k
"""
_EPOCHS: Final = (
    "SELECT epoch, first_run, last_run, entries, last_position, filter FROM dedup_epochs"
    " ORDER BY epoch"
)
_PUT_EPOCH: Final = (
    "INSERT OR REPLACE INTO dedup_epochs (epoch, first_run, last_run, entries, last_position,"
    " filter) VALUES (?, ?, ?, ?, ?, ?)"
)
_RUN_BLOCKS: Final = "SELECT entries FROM dedup_blocks WHERE run >= ? AND run <= ?"
_DELETE_SLICE: Final = """
    DELETE FROM dedup_blocks WHERE run = ?1 AND prefix <= (
        SELECT max(prefix) FROM (
            SELECT prefix FROM dedup_blocks WHERE run = ?1 ORDER BY prefix LIMIT ?2))
"""
_EXPIRE_BLOCKS: Final = max(1, EXPIRE_ROWS // BLOCK_ENTRIES)
_SET_FLUSHED: Final = "INSERT OR REPLACE INTO state (name, value) VALUES ('flushed_below', ?)"


def key_digest(tenant: TenantName, bus: str, source: str, event_id: str) -> bytes:
    """The 128-bit BLAKE2b digest of a dedup key; length prefixes keep the parts apart."""
    text = f"{len(tenant)}:{tenant}{len(bus)}:{bus}{len(source)}:{source}{event_id}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def key_digests(events: Iterable[NewEvent]) -> list[bytes]:
    """`key_digest` of each event: the text before the id is hashed once per tenant, bus and
    source (a group's events mostly share them) and each id goes on from a copy of that state."""
    heads: dict[tuple[str, str, str], Any] = {}
    digests: list[bytes] = []
    append = digests.append
    for event in events:
        owner = (event.tenant, event.bus, event.source)
        head = heads.get(owner)
        if head is None:
            tenant, bus, source = owner
            text = f"{len(tenant)}:{tenant}{len(bus)}:{bus}{len(source)}:{source}"
            head = heads[owner] = hashlib.blake2b(
                text.encode("utf-8", "surrogatepass"), digest_size=16
            )
        hashed = head.copy()
        hashed.update(event.id.encode("utf-8", "surrogatepass"))
        append(hashed.digest())
    return digests


def halves(digest: bytes) -> tuple[int, int]:
    """A digest as two signed 64-bit integers (`hash`, `tag`: the Bloom filters' block and
    bits, and `dedup_kept`'s columns)."""
    hashed, tag = _halves.unpack(digest)
    return hashed, tag


def prefix(digest: bytes) -> int:
    """The first 8 bytes of a digest as a signed integer that sorts as the digests do."""
    return int.from_bytes(digest[:8], "big") - (1 << 63)


def pack_blocks(digests: Sequence[bytes], positions: dict[bytes, int]) -> list[tuple[int, bytes]]:
    """Sorted `digests` with their positions as blocks: `(prefix, entries)` each.

    A block never begins with the prefix its predecessor ends with, so prefixes identify
    blocks and a key is in the last block whose prefix is not above its own.
    """
    # Every position looked up at once (a map in C, not a comprehension per block).
    ordered = list(map(positions.__getitem__, digests))
    blocks: list[tuple[int, bytes]] = []
    start, count = 0, len(digests)
    while start < count:
        end = min(start + BLOCK_ENTRIES, count)
        while end < count and digests[end][:8] == digests[end - 1][:8]:
            end += 1  # 64 equal bits in two digests: rare beyond measure, but possible
        part = digests[start:end]
        packed = struct.pack(f"<{end - start}q", *ordered[start:end])
        blocks.append((prefix(part[0]), b"".join(part) + packed))
        start = end
    return blocks


def block_digests(entries: bytes) -> list[bytes]:
    """The digests of a block, in order."""
    count = len(entries) // _ENTRY_BYTES
    return [entries[i : i + DIGEST_BYTES] for i in range(0, count * DIGEST_BYTES, DIGEST_BYTES)]


def block_positions(entries: bytes) -> tuple[int, ...]:
    """The positions of a block, in the order of its digests."""
    count = len(entries) // _ENTRY_BYTES
    return struct.unpack_from(f"<{count}q", entries, count * DIGEST_BYTES)


def block_lookup(entries: bytes, digest: bytes) -> int | None:
    """The position stored under `digest` in a block, or None.

    Searched for in the block's bytes in C (a block's digests are unique) rather than by a
    bisection over a list of its digests: the writer looks into a block for every key that a
    filter takes for one it may hold, ~1 % of them."""
    end = len(entries) // _ENTRY_BYTES * DIGEST_BYTES
    at = entries.find(digest, 0, end)
    while at > 0 and at % DIGEST_BYTES:  # found across two digests: look on
        at = entries.find(digest, at + 1, end)
    if at < 0:
        return None
    position: int = struct.unpack_from("<q", entries, end + 8 * (at // DIGEST_BYTES))[0]
    return position


@dataclass(frozen=True)
class Epoch:
    """Runs `first_run..last_run` and the filter over their keys."""

    number: int
    first_run: int
    last_run: int
    entries: int
    last_position: int
    bloom: Bloom
    closed: bool = False

    def row(self) -> tuple[object, ...]:
        stored = self.bloom.to_bytes() if self.closed else None
        return (
            self.number,
            self.first_run,
            self.last_run,
            self.entries,
            self.last_position,
            stored,
        )


@dataclass
class _Frozen:
    """Entries handed from the writer to the indexer, to become one run."""

    entries: dict[bytes, int]
    upto: int  # every entry below this position is in this run or an earlier one
    # The keys of every entry as the writer's filter checks made them (None: not all were
    # made so): the run's filter is filled from these rather than from the digests again.
    masks: list[GroupMasks] | None = None


@dataclass
class Written:
    """A run written in a transaction not yet known to have committed."""

    frozen: _Frozen
    live: int  # its entries
    keys: list[tuple[int, int]]  # (hash, tag) of its entries; empty if `frozen.masks` has them
    epochs: list[Epoch]  # the epochs as they are once it has


@dataclass
class Dedup:
    run_entries: int = RUN_ENTRIES
    epoch_entries: int = EPOCH_ENTRIES
    recent: dict[bytes, int] = field(default_factory=dict)
    flushed_below: int = 1
    epochs: list[Epoch] = field(default_factory=list)  # replaced, never changed in place
    _frozen: list[_Frozen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_run: int = 1
    _expiring: list[int] = field(default_factory=list)  # runs to delete, oldest first
    # The writer thread's: the masks of the last `find`, and of every `add` into `recent`
    # (None once an entry came without them).
    _found_masks: GroupMasks | None = None
    _recent_masks: list[GroupMasks] | None = field(default_factory=list)

    # -- opening -------------------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection, flushed_below: int) -> None:
        """Read the epochs and their filters. The caller then `add`s the entries of the events
        from `flushed_below` on, which the runs may lack."""
        self.flushed_below = flushed_below
        _pack_legacy_runs(conn)
        top = 0
        epochs = []
        for number, first_run, last_run, entries, last_position, raw in conn.execute(_EPOCHS):
            if raw is not None:
                bloom, closed = Bloom.from_bytes(raw), True
            else:
                bloom, closed = Bloom(self._capacity(2 * entries)), False
                for (block,) in conn.execute(_RUN_BLOCKS, (first_run, last_run)):
                    bloom.add_keys(_halves.iter_unpack(b"".join(block_digests(block))))
            epochs.append(Epoch(number, first_run, last_run, entries, last_position, bloom, closed))
            top = last_run
        self.epochs = epochs
        # Runs of no epoch: one written in part when the process stopped (after the epochs'
        # runs), or what an expiry had left to delete (before them). Both go.
        lowest, highest = conn.execute("SELECT min(run), max(run) FROM dedup_blocks").fetchone()
        first_live = epochs[0].first_run if epochs else (highest or 0) + 1
        self._expiring = list(range(lowest, first_live)) if lowest is not None else []
        if epochs and highest is not None and highest > top:
            self._expiring += list(range(top + 1, highest + 1))
        self._next_run = max(top, highest or 0) + 1

    # -- the writer thread ---------------------------------------------------------------------

    def find(
        self, conn: sqlite3.Connection, digests: Sequence[bytes], first_live: int
    ) -> dict[int, int]:
        """For each of `digests` with a live entry (at `first_live` or later): its position."""
        found: dict[int, int] = {}
        with self._lock:
            # Newest first: a key stored again after it expired is in a newer table too, and
            # the older, expired entry must not hide the live one.
            frozen = [f.entries for f in reversed(self._frozen)]
            epochs = [
                (e.bloom, e.first_run, e.last_run)
                for e in self.epochs
                if e.last_position >= first_live
            ]
        # Memory first, one look in C per table for the whole group: the common group holds no
        # key that any of them has, and then every digest goes on to the filters.
        tables = [self.recent, *frozen]
        unknown: Iterable[int] = range(len(digests))
        if not all(table.keys().isdisjoint(digests) for table in tables):
            unknown = []
            for index, digest in enumerate(digests):
                for table in tables:
                    position = table.get(digest)
                    if position is not None:
                        if position >= first_live:
                            found[index] = position
                        break
                else:
                    unknown.append(index)
        asked: list[tuple[int, int, int]] = []
        self._found_masks = None
        if epochs:
            # The filters' keys and masks for the whole group at once (a comprehension each,
            # not a call per digest and filter); only the digests a filter may hold are asked
            # for on disk, in each run of its epoch.
            joined = b"".join(digests)
            keys = list(_halves.iter_unpack(joined))
            bits = masks(keys)
            if sys.byteorder == "little":  # the blocks by a slice in C, as `halves` reads them
                self._found_masks = (array("q", joined)[0::2], bits)
            unknown = list(unknown)
            for bloom, first_run, last_run in epochs:
                for index in bloom.which_may_hold(keys, bits, unknown):
                    key = prefix(digests[index])
                    asked.extend((index, run, key) for run in range(first_run, last_run + 1))
        if asked:
            for index, entries in conn.execute(_FIND, (_encode_json(asked),)):
                if entries is None:
                    continue
                position = block_lookup(entries, digests[index])
                # A key in two runs (stored again after it expired): the newer copy counts.
                if position is not None and position >= max(first_live, found.get(index, 0)):
                    found[index] = position
        return found

    def add(
        self,
        entries: Iterable[tuple[bytes, int]],
        next_position: int,
        *,
        found: Sequence[bytes] | None = None,
    ) -> bool:
        """The entries of newly stored events; True when they filled `recent` and it was handed
        to the indexer (wake it).

        `found`: the digests of the last `find`, every one of them stored now (a group without
        a duplicate): the masks that `find` made for them are kept for the run's filter, which
        the indexer then fills without making them again."""
        made = self._found_masks
        if self._recent_masks is not None:
            if found is not None and made is not None and len(made[1]) == len(found):
                self._recent_masks.append(made)
            else:
                self._recent_masks = None
        self._found_masks = None
        self.recent.update(entries)
        if len(self.recent) < self.run_entries:
            return False
        self.freeze(next_position)
        return True

    def freeze(self, next_position: int) -> None:
        """Hand `recent` to the indexer as the next run."""
        if not self.recent:
            return
        with self._lock:
            self._frozen.append(_Frozen(self.recent, next_position, self._recent_masks))
        self.recent = {}
        self._recent_masks = []

    # -- the indexer thread --------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        return bool(self._frozen)

    def write_run(self, conn: sqlite3.Connection, first_live: int) -> Written | None:
        """Write the oldest frozen entries as a run, in the caller's transaction."""
        with self._lock:
            if not self._frozen:
                return None
            frozen = self._frozen[0]
        entries = frozen.entries
        if min(entries.values(), default=first_live) >= first_live:
            live = sorted(entries)  # the common case: none has expired yet
            last_position = max(entries.values(), default=0)
        else:
            live = sorted(digest for digest, at in entries.items() if at >= first_live)
            last_position = max(map(entries.__getitem__, live), default=0)
        epochs = list(self.epochs)
        if live:
            run = self._next_run
            conn.executemany(_INSERT_BLOCK, [(run, *block) for block in pack_blocks(live, entries)])
            epochs = self._place_run(conn, epochs, run, len(live), last_position, first_live)
        conn.execute(_SET_FLUSHED, (frozen.upto,))
        # Masks of entries that have expired meanwhile only make the filter a little fuller.
        keys = [] if frozen.masks is not None else list(_halves.iter_unpack(b"".join(live)))
        return Written(frozen, len(live), keys, epochs)

    def written(self, written: Written) -> None:
        """The transaction of `write_run` committed: fill the filter, then publish."""
        if written.live:
            bloom, keys = written.epochs[-1].bloom, written.keys
            for start in range(0, len(keys), _FILL_SLICE):
                bloom.add_keys(keys[start : start + _FILL_SLICE])
                time.sleep(0)  # let the writer and the event loop have the GIL in between
            filled = 0
            for blocks, bits in written.frozen.masks or ():
                bloom.add_masks(blocks, bits)
                filled += len(bits)
                if filled >= _FILL_SLICE:
                    filled = 0
                    time.sleep(0)
            self._next_run += 1
        with self._lock:
            self.epochs = written.epochs
            self._frozen.remove(written.frozen)
        self.flushed_below = written.frozen.upto

    def expire(self, conn: sqlite3.Connection, first_live: int) -> tuple[list[Epoch], int, bool]:
        """Delete expired epochs' rows, a slice per call, in the caller's transaction; returns
        what `expired` needs once that commits."""
        gone = []
        for epoch in self.epochs:
            if not epoch.closed or epoch.last_position >= first_live:
                break
            conn.execute("DELETE FROM dedup_epochs WHERE epoch = ?", (epoch.number,))
            gone.append(epoch)
        runs = self._expiring or [r for e in gone for r in range(e.first_run, e.last_run + 1)]
        if not runs:
            return gone, 0, False
        cursor = conn.execute(_DELETE_SLICE, (runs[0], _EXPIRE_BLOCKS))
        return gone, runs[0], cursor.rowcount < _EXPIRE_BLOCKS

    def expired(self, gone: list[Epoch], run: int, run_gone: bool) -> None:
        if gone:
            with self._lock:
                self.epochs = [e for e in self.epochs if e not in gone]
            self._expiring.extend(r for e in gone for r in range(e.first_run, e.last_run + 1))
        if run_gone and run in self._expiring:
            self._expiring.remove(run)

    def persist(self, conn: sqlite3.Connection, next_position: int, first_live: int) -> None:
        """Before a clean stop: every live entry into runs and the open epoch's filter stored,
        so the next start has nothing to rebuild. Runs its own transactions."""
        self.freeze(next_position)
        while self.frozen:
            conn.execute("BEGIN IMMEDIATE")
            try:
                written = self.write_run(conn, first_live)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if written is not None:
                self.written(written)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self.epochs and not self.epochs[-1].closed:
                # Stored with its filter it loads as closed and takes no more runs.
                conn.execute(_PUT_EPOCH, replace(self.epochs[-1], closed=True).row())
            conn.execute(_SET_FLUSHED, (next_position,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.flushed_below = next_position

    def _place_run(
        self,
        conn: sqlite3.Connection,
        epochs: list[Epoch],
        run: int,
        count: int,
        last: int,
        first_live: int,
    ) -> list[Epoch]:
        """The epochs once the run has joined the open one (closing it first if full); a new
        one's filter is made for the keys in the window (one an event, from the window's first
        position to the run's last)."""
        current = epochs[-1] if epochs and not epochs[-1].closed else None
        if current is not None and current.entries + count > current.bloom.capacity:
            closed = replace(current, closed=True)
            conn.execute(_PUT_EPOCH, closed.row())
            epochs[-1], current = closed, None
        if current is None:
            number = epochs[-1].number + 1 if epochs else 1
            bloom = Bloom(max(count, self._capacity(last - first_live + 1)))
            current = Epoch(number, run, run, 0, 0, bloom)
            epochs.append(current)
        joined = replace(
            current,
            last_run=run,
            entries=current.entries + count,
            last_position=max(current.last_position, last),
        )
        epochs[-1] = joined
        conn.execute(_PUT_EPOCH, joined.row())
        return epochs

    def _capacity(self, keys: int) -> int:
        """The keys a new filter is made for, within bounds. Made for the window's keys, an
        epoch lasts about a window at a steady rate and two are held, however long the log has
        run (docs/storage.md, "Filters sized by the window"). A young log's window is all it
        has taken: its filters double."""
        return min(self.epoch_entries, max(self.run_entries, keys))


def _pack_legacy_runs(conn: sqlite3.Connection) -> None:
    """Pack the runs an earlier version wrote a row per entry into blocks, in one transaction."""
    runs = [run for (run,) in conn.execute("SELECT DISTINCT run FROM dedup_entries ORDER BY run")]
    if not runs:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for run in runs:
            positions = {
                _halves.pack(hashed, tag): position
                for hashed, tag, position in conn.execute(
                    "SELECT hash, tag, position FROM dedup_entries WHERE run = ?", (run,)
                )
            }
            blocks = pack_blocks(sorted(positions), positions)
            conn.executemany(_INSERT_BLOCK, [(run, *block) for block in blocks])
        conn.execute("DELETE FROM dedup_entries")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
