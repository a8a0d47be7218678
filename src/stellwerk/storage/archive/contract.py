"""The archive store's contract, checked once for every backend.

Backends subclass `CheckedArchiveStore`. Its `archive`, `read_window` and `erase` refuse what
the seam refuses (`ValueError`: a copy of another bus's event, a read without a positive limit,
an erasure without a needle) before the backend's `_archive`, `_read_window` and `_erase` see
the call; `check_archive_cursor` is what both backends check against the stored cursor.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Self

from stellwerk.refs import BusRef
from stellwerk.seams import (
    DEFAULT_ARCHIVE_READ,
    ArchiveCursorConflict,
    ArchivedEvent,
    ArchiveEraseMatch,
    ArchiveStore,
    StoredEvent,
)


class CheckedArchiveStore(ArchiveStore):
    """An `ArchiveStore` whose arguments are checked before the backend's hooks run."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def archive(
        self,
        bus: BusRef,
        position: int,
        entries: Sequence[tuple[str, StoredEvent]],
    ) -> None:
        tenant, name = bus.tenant, bus.bus
        for uid, event in entries:
            if event.tenant != tenant or event.bus != name:
                raise ValueError(
                    f"event {event.id!r} of {event.tenant}/{event.bus} is not of {bus}"
                    f" (archive {uid})"
                )
        await self._archive(bus, position, entries)

    async def read_window(
        self,
        uid: str,
        start: datetime,
        end: datetime,
        after_seq: int = 0,
        limit: int = DEFAULT_ARCHIVE_READ,
    ) -> list[ArchivedEvent]:
        if limit < 1:  # SQLite, for one, reads a negative LIMIT as none at all
            raise ValueError(f"limit must be at least 1, not {limit}")
        return await self._read_window(uid, start, end, after_seq, limit)

    async def erase(
        self, uids: Sequence[str], needle: bytes, matches: ArchiveEraseMatch
    ) -> list[ArchivedEvent]:
        if not needle:
            raise ValueError("an erasure needs a non-empty needle")
        return await self._erase(uids, needle, matches)

    @abstractmethod
    async def _archive(
        self,
        bus: BusRef,
        position: int,
        entries: Sequence[tuple[str, StoredEvent]],
    ) -> None:
        """`archive` of the bus's own events; check the cursor, then write."""

    @abstractmethod
    async def _read_window(
        self, uid: str, start: datetime, end: datetime, after_seq: int, limit: int
    ) -> list[ArchivedEvent]:
        """`read_window` with a positive limit."""

    @abstractmethod
    async def _erase(
        self, uids: Sequence[str], needle: bytes, matches: ArchiveEraseMatch
    ) -> list[ArchivedEvent]:
        """`erase` with a non-empty needle."""


def check_archive_cursor(
    bus: BusRef,
    current: int,
    position: int,
    entries: Sequence[tuple[str, StoredEvent]],
) -> None:
    """`ArchiveCursorConflict` unless the run lies above the bus's archive cursor `current`."""
    if position <= current:
        raise ArchiveCursorConflict(
            f"{bus} is archived up to {current}; cannot archive up to {position}"
        )
    for _, event in entries:
        if not current < event.position <= position:
            raise ArchiveCursorConflict(
                f"event at {event.position} is not within {bus}'s ({current}, {position}]"
            )
