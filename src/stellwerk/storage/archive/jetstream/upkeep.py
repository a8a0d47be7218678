"""The archive store's totals, and what removes copies: trims, drops and erasures.

Totals are a record per archive changed by compare-and-set; whatever removes copies counts them
out after the removal, and `recount` mends totals a crash left off (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from stellwerk.seams import ArchivedEvent, ArchiveEraseMatch, StoredEvent
from stellwerk.storage.archive.jetstream.io import ArchiveIO
from stellwerk.storage.archive.jetstream.records import (
    POSITION,
    Copies,
    Totals,
    decode_totals,
    encode,
)
from stellwerk.storage.jetstream import nothing_left, records

SCAN_PAGE: Final = 1000
DELETES_AT_ONCE: Final = 64


@dataclass(frozen=True, slots=True)
class _Scan:
    """What a trim found: `events` copies to purge (below `purge_below`) and stragglers."""

    purge_below: int
    events: int
    bytes: int
    stragglers: list[tuple[int, int]]  # (seq, body bytes)


class ArchiveUpkeep:
    """Totals and removals on an open `ArchiveIO`; `slack_us` as the store's `time_slack`."""

    def __init__(self, io: ArchiveIO, *, slack_us: int, secure_erase: bool) -> None:
        self._io = io
        self._layout = io.layout
        self._slack_us = slack_us
        self._secure_erase = secure_erase

    # -- totals --------------------------------------------------------------------------------

    async def totals(self, uid: str) -> tuple[int, Totals]:
        """The archive's totals record and its sequence in the table (0: none yet)."""
        seq, data = await self._io.record(self._layout.totals_key(uid))
        return seq, decode_totals(data) if data else Totals()

    async def change_totals(self, uid: str, change: Callable[[Totals], Totals | None]) -> None:
        """Compare-and-set `change(totals)` into the archive's record until it holds (None:
        nothing to change)."""
        while True:
            seq, totals = await self.totals(uid)
            changed = change(totals)
            if changed is None or changed == totals:
                return
            if await self._io.put(self._layout.totals_key(uid), encode(changed), seq) is not None:
                return

    async def count_in(self, uid: str, events: Sequence[StoredEvent]) -> None:
        """Add stored copies (in position order) not counted yet: those above `upto`."""

        def add(totals: Totals) -> Totals | None:
            new = [e for e in events if e.position > totals.upto]
            if not new:
                return None
            size = sum(len(e.body) for e in new)
            return Totals(totals.events + len(new), totals.bytes + size, new[-1].position)

        await self.change_totals(uid, add)

    async def count_out(self, uid: str, events: int, size: int) -> None:
        if events:
            await self.change_totals(
                uid, lambda t: Totals(max(0, t.events - events), max(0, t.bytes - size), t.upto)
            )

    async def recount(self, uid: str) -> None:
        """Set the archive's totals from what its subject holds. `upto` becomes the highest
        position seen if that is higher: an archiver whose copies the count took in, but who
        has not counted them yet, must then not count them again."""
        subject = self._layout.copies_subject(uid)
        while True:
            seq, totals = await self.totals(uid)
            events = size = 0
            upto = totals.upto
            start = 1
            while True:
                found = await self._io.page(subject, start, SCAN_PAGE)
                events += len(found)
                size += sum(len(m.data) for m in found)
                if found:
                    upto = max(upto, *(int((m.headers or {})[POSITION]) for m in found))
                if not found or nothing_left(found[-1]):
                    break
                start = records.sequence_of(found[-1]) + 1
            counted = Totals(events, size, upto)
            if await self._io.put(self._layout.totals_key(uid), encode(counted), seq) is not None:
                return

    # -- removing ------------------------------------------------------------------------------

    async def trim(self, uid: str, cut_us: int) -> int:
        subject = self._layout.copies_subject(uid)
        scan = await self._scan_older(subject, cut_us)
        if scan is None:
            return 0
        purged = await self._io.purge(subject, scan.purge_below) if scan.purge_below else 0
        deleted = await self._delete([seq for seq, _ in scan.stragglers], erase=False)
        removed = purged + len(deleted)
        if purged == scan.events:
            gone = set(deleted)
            size = scan.bytes + sum(n for seq, n in scan.stragglers if seq in gone)
            await self.count_out(uid, removed, size)
        else:  # an erasure took some of them meanwhile: count again
            await self.recount(uid)
        return removed

    async def _scan_older(self, subject: str, cut_us: int) -> _Scan | None:
        """Read the copies recorded before `cut_us`: the run from the start up to the first
        one recorded at the cut or later (the border), then the stragglers up to `time_slack`
        past the cut."""
        border = events = size = last = 0
        stragglers: list[tuple[int, int]] = []
        past = False
        while not past:
            found = await self._io.page(subject, last + 1, SCAN_PAGE)
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
        purged = await self._io.purge(self._layout.copies_subject(uid))
        await self.change_totals(uid, lambda t: Totals(0, 0, t.upto))
        return purged

    async def erase(
        self, uid: str, needle: bytes, matches: ArchiveEraseMatch
    ) -> list[ArchivedEvent]:
        """Scan the archive to its end; delete the finds a page at a time."""
        subject = self._layout.copies_subject(uid)
        copies = Copies(uid)
        removed: list[ArchivedEvent] = []
        seq = 1
        while True:
            found = await self._io.page(subject, seq, SCAN_PAGE)
            chosen = [copies.event(m) for m in found if needle in m.data]
            chosen = [event for event in chosen if matches(event)]
            gone = set(await self._delete([e.seq for e in chosen], erase=self._secure_erase))
            chosen = [event for event in chosen if event.seq in gone]
            await self.count_out(uid, len(chosen), sum(len(e.body) for e in chosen))
            removed += chosen
            if not found or nothing_left(found[-1]):
                return removed
            seq = records.sequence_of(found[-1]) + 1

    async def _delete(self, seqs: Sequence[int], *, erase: bool) -> list[int]:
        """Delete these copies; return those that were there to delete."""
        deleted: list[int] = []
        for first in range(0, len(seqs), DELETES_AT_ONCE):
            chunk = seqs[first : first + DELETES_AT_ONCE]
            done = await asyncio.gather(*(self._io.delete(seq, erase=erase) for seq in chunk))
            deleted += [seq for seq, ok in zip(chunk, done, strict=True) if ok]
        return deleted
