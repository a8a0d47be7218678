"""Dedup of the embedded log under concurrency: every id stored once, every resend a duplicate.

A key's entry moves from the writer's dict to a frozen one, to a run in the index; the window's
first live position moves from the indexer's pending marks to the index. At no step may a
lookup miss it. The stress test runs many appenders that resend ids while the indexer commits
and rotates epochs all the time (tiny runs and epochs) and the window moves (a clock the test
moves); the tests after it put a lookup exactly at each boundary.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import struct
import threading
from array import array
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.polling import eventually
from tests.storage.eventlog_support import ACME, ACME_DEFAULT, MovableClock, new_event

from stellwerk.clock import to_us
from stellwerk.seams import AppendResult, AppendStatus, StoredEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.eventlog.sqlite.bloom import Bloom, mask, masks
from stellwerk.storage.eventlog.sqlite.dedup import (
    BLOCK_ENTRIES,
    Dedup,
    block_lookup,
    key_digest,
    key_digests,
    pack_blocks,
    prefix,
)
from stellwerk.storage.sqlite import LOG_DIR

WINDOW = timedelta(seconds=10)
STEP = WINDOW * 0.6
POOL = 40
APPENDERS = 8
APPENDS = 250


def digest(n: int) -> bytes:
    return key_digest(ACME, "default", "/orders", f"e{n}")


@pytest.mark.slow
async def test_concurrent_resends_while_the_indexer_rotates_are_each_a_duplicate(
    tmp_path: Path,
) -> None:
    """Appenders send ids from a small pool, one by one and in small batches, while every
    group moves the clock by a third of the window (so the window's start is always moving and
    often lies in marks the index does not have yet) and the indexer writes tiny runs and
    rotates epochs. Whatever the timing, a copy is stored again only once the one before has
    left the window, and every duplicate names a stored copy of its id."""
    clock = MovableClock()
    log = SqliteEventLog(
        tmp_path / LOG_DIR,
        clock=clock,
        dedup_window=WINDOW,
        on_commit=lambda _events, _seconds: clock.advance(WINDOW / 3),
        index_interval=0.001,
        dedup_run_entries=8,
        dedup_epoch_entries=32,
        max_group_events=8,
    )
    duplicates: list[tuple[str, int]] = []
    rng = random.Random(14)

    async def appender() -> None:
        for _ in range(APPENDS):
            ids = [f"e{rng.randrange(POOL)}" for _ in range(rng.choice((1, 1, 2, 3)))]
            ids = list(dict.fromkeys(ids))
            outcomes = await log.append([new_event(i) for i in ids])
            duplicates.extend(
                (i, o.position) for i, o in zip(ids, outcomes, strict=True) if o.duplicate
            )

    async with log:
        await asyncio.gather(*(appender() for _ in range(APPENDERS)))
        stored = await read_all(log)

    window_us = WINDOW // timedelta(microseconds=1)
    copies: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in stored:
        copies[event.id].append(event)
    problems = [
        f"{key} stored at {a.position} and again at {b.position} within the window"
        for key, events in copies.items()
        for a, b in itertools.pairwise(events)
        if to_us(b.recorded_time) - to_us(a.recorded_time) < window_us
    ]
    positions = {(e.id, e.position) for e in stored}
    problems += [
        f"{key}: a duplicate of {at}, no copy of it"
        for key, at in duplicates
        if (key, at) not in positions
    ]
    assert duplicates, "no resend was a duplicate: the test tests nothing"
    assert problems == []


async def read_all(log: SqliteEventLog) -> list[StoredEvent]:
    found: list[StoredEvent] = []
    while batch := await log.read(ACME_DEFAULT, after=found[-1].position if found else 0):
        found += batch
    return found


def test_a_key_stored_again_after_it_expired_is_found_newest_first() -> None:
    """An expired entry in an older frozen table must not hide the live one in a newer."""
    dedup = Dedup(run_entries=2)
    key = digest(1)
    dedup.add([(key, 5), (digest(2), 6)], next_position=7)  # frozen: the first copy, at 5
    dedup.add([(key, 40), (digest(3), 41)], next_position=42)  # frozen: stored again, at 40
    assert dedup.frozen
    found = dedup.find(_no_disk(), [key], first_live=30)
    assert found == {0: 40}


def _no_disk() -> Any:
    class NoDisk:
        def execute(self, *_args: object) -> list[object]:
            raise AssertionError("looked on disk for a key held in memory")

    return NoDisk()


async def test_a_lookup_while_the_indexer_commits_the_live_marks_still_finds_them(
    tmp_path: Path,
) -> None:
    """The window's first live position is read from the index and from the marks the index
    lacks. While the indexer commits, its marks are in neither place unless kept until the
    commit is visible: the writer then took every entry for expired and stored a resend again."""
    clock = MovableClock()
    log = SqliteEventLog(tmp_path / LOG_DIR, clock=clock, dedup_window=WINDOW, index_interval=0.001)
    async with log:
        committer = log._committer
        assert committer is not None
        indexer = committer.indexer
        await log.append([new_event("old")])
        await indexed_marks(tmp_path / LOG_DIR, 1)  # the index holds the first mark
        committing, go_on = threading.Event(), threading.Event()
        real = indexer._conn
        assert real is not None
        indexer._conn = _HoldCommit(real, committing, go_on)  # type: ignore[assignment]
        try:
            clock.advance(STEP)
            # Its mark is pending; the indexer thread takes it and stops before its COMMIT.
            [first] = await log.append([new_event("a")])
            assert await asyncio.to_thread(committing.wait, 10)
            clock.advance(STEP)  # the first mark has left the window; `a`'s has not
            [again] = await log.append([new_event("a")])
        finally:
            go_on.set()
        assert again == AppendResult(AppendStatus.DUPLICATE, first.position)


async def indexed_marks(directory: Path, count: int) -> None:
    def marks() -> int:
        conn = sqlite3.connect(directory / "index.db")
        try:
            [(found,)] = conn.execute("SELECT count(*) FROM marks")
        finally:
            conn.close()
        return int(found)

    await eventually(marks, what=f"the index holds {count} marks", accept=lambda n: n >= count)


class _HoldCommit:
    """The indexer's connection, stopping before its COMMIT until told to go on."""

    def __init__(self, conn: Any, committing: threading.Event, go_on: threading.Event) -> None:
        self._conn = conn
        self._committing = committing
        self._go_on = go_on

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            self._committing.set()
            assert self._go_on.wait(10)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_every_key_of_a_run_is_found_in_its_block_and_no_other_key_is() -> None:
    """Blocks are found by their first digest's prefix, so a run of sorted digests split into
    blocks must answer every key from the last block whose prefix is not above the key's,
    at the edges of blocks too, and where two digests share their first 64 bits."""
    rng = random.Random(7)
    digests = sorted(rng.randbytes(16) for _ in range(3 * BLOCK_ENTRIES + 5))
    # Two more digests with the first 8 bytes of the one where the first block would end.
    edge = digests[BLOCK_ENTRIES - 1]
    digests = sorted([*digests, edge[:8] + bytes(8), edge[:8] + b"\xff" * 8])
    positions = {d: 1000 + i for i, d in enumerate(digests)}
    blocks = pack_blocks(digests, positions)
    prefixes = [key for key, _ in blocks]
    assert prefixes == sorted(set(prefixes))
    assert [prefix(entries[:16]) for _, entries in blocks] == prefixes

    def find(digest: bytes) -> int | None:
        below = [entries for key, entries in blocks if key <= prefix(digest)]
        return block_lookup(below[-1], digest) if below else None

    assert [find(d) for d in digests] == [positions[d] for d in digests]
    strangers = [rng.randbytes(16) for _ in range(200)] + [edge[:8] + b"\x01" * 8]
    # The bytes of two neighbours, from the middle of one to the middle of the next.
    strangers += [digests[i][8:] + digests[i + 1][:8] for i in range(0, len(digests) - 1, 7)]
    assert [find(d) for d in strangers] == [None] * len(strangers)


def test_a_key_found_in_a_block_across_two_digests_is_looked_for_on() -> None:
    """A block is searched as bytes: a key that also lies across two neighbours before its own
    place is found at its own place."""
    key = b"\x80" * 8 + b"\x10" * 8
    digests = [bytes(8) + key[:8], key[8:] + bytes(8), key]  # the first two hold it across
    assert digests == sorted(digests)
    ((_, entries),) = pack_blocks(digests, {d: 7 + i for i, d in enumerate(digests)})
    assert entries.find(key) == 8
    assert block_lookup(entries, key) == 9
    assert block_lookup(entries, digests[0]) == 7


def test_the_filters_masks_are_those_stored_filters_were_made_with() -> None:
    """Filters of closed epochs are stored: a key's bits must stay the six its tag chose when
    they were made, three pairs of 6-bit fields of its 36 low bits."""
    rng = random.Random(3)
    tags = [rng.getrandbits(64) - (1 << 63) for _ in range(20_000)]

    def made_with(tag: int) -> int:
        return sum({1 << ((tag >> (6 * field)) & 63) for field in range(6)})

    assert [mask(tag) for tag in tags] == [made_with(tag) for tag in tags]
    assert masks([(0, tag) for tag in tags]) == [made_with(tag) for tag in tags]


def test_digests_made_a_group_at_a_time_are_those_made_one_by_one() -> None:
    """They are stored: a change would make every resend after an upgrade a new event."""
    events = [
        new_event(f"e{i}", bus=bus, source=source)
        for i, (bus, source) in enumerate(
            itertools.product(["default", "b:2", "ünï"], ["/orders", "urn:x", "2:a", "ß/ø"])
        )
    ]
    assert key_digests(events) == [key_digest(e.tenant, e.bus, e.source, e.id) for e in events]


def test_a_groups_filter_check_answers_as_one_check_per_key() -> None:
    rng = random.Random(14)
    bloom = Bloom(2048)
    held = [(rng.getrandbits(64) - (1 << 63), rng.getrandbits(64) - (1 << 63)) for _ in range(1500)]
    bloom.add_keys(held)
    others = [
        (rng.getrandbits(64) - (1 << 63), rng.getrandbits(64) - (1 << 63)) for _ in range(5000)
    ]
    keys = held + others
    bits = masks(keys)
    among = range(0, len(keys), 3)
    one_by_one = [i for i in among if bloom.may_hold(keys[i][0], mask(keys[i][1]))]
    assert bloom.which_may_hold(keys, bits, among) == one_by_one
    assert set(range(0, 1500, 3)) <= set(one_by_one)  # no false negatives
    assert len(one_by_one) < 500 + 200  # and some keys not held are told apart


def test_a_full_filter_sends_at_most_one_key_in_500_it_does_not_hold_to_the_disk() -> None:
    """Each key a filter takes for one it may hold is looked for on disk in every run of its
    epoch: at 12 bits per key, 1 % of them were (a third of the writer's dedup cost)."""
    rng = random.Random(14)

    def keys(count: int) -> list[tuple[int, int]]:
        return [
            (rng.getrandbits(64) - (1 << 63), rng.getrandbits(64) - (1 << 63)) for _ in range(count)
        ]

    bloom = Bloom(65_536)
    bloom.add_keys(keys(bloom.capacity))  # as full as an epoch gets before it is closed
    others = keys(100_000)
    passed = bloom.which_may_hold(others, masks(others), range(len(others)))
    assert len(passed) < len(others) // 500


async def test_a_runs_filter_filled_from_the_writers_masks_is_the_one_its_digests_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once filters exist, the writer's check of a group makes each key's block and mask; a
    run of groups stored without a duplicate has its filter filled from those, and that
    filter must be the one its digests on disk make (as a restart rebuilds it)."""
    from_masks: list[int] = []
    add_masks = Bloom.add_masks

    def counted(bloom: Bloom, blocks: Any, bits: list[int]) -> None:
        from_masks.append(len(bits))
        add_masks(bloom, blocks, bits)

    monkeypatch.setattr(Bloom, "add_masks", counted)
    log = SqliteEventLog(
        tmp_path / LOG_DIR, index_interval=0.001, dedup_run_entries=256, dedup_epoch_entries=4096
    )
    async with log:
        for group in range(30):
            await log.append([new_event(f"g{group}-{i}") for i in range(100)])
        dedup = log._committer.dedup  # type: ignore[union-attr]
        await eventually(lambda: not dedup.frozen and dedup.flushed_below > 2_500)
        assert sum(from_masks) >= 1_000  # most runs came from masks
        conn = sqlite3.connect(log._index_path)
        try:
            for epoch in dedup.epochs:
                rebuilt = Bloom(0, array("Q", bytes(8 * len(epoch.bloom.words))))
                for (block,) in conn.execute(
                    "SELECT entries FROM dedup_blocks WHERE run >= ? AND run <= ?",
                    (epoch.first_run, epoch.last_run),
                ):
                    count = len(block) // 24
                    rebuilt.add_keys(struct.iter_unpack("<qq", block[: 16 * count]))
                assert rebuilt.words == epoch.bloom.words
        finally:
            conn.close()
