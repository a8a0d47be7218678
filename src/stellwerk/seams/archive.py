"""The archive store seam: copies of a bus's matching events, kept per archive (`uid`) for replays.

The archiver stores a run's copies together with its cursor, so it neither archives an event
twice nor skips one; reads go by recorded time window, paging on by `seq` (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, Protocol, Self

import msgspec

from stellwerk.refs import BusRef
from stellwerk.seams.eventlog import StoredEvent

DEFAULT_ARCHIVE_READ: Final = 1000


class ArchivedEvent(msgspec.Struct, frozen=True):
    """An event as an archive holds it."""

    uid: str
    seq: int
    position: int
    id: str
    source: str
    type: str
    subject: str | None
    recorded_time: datetime
    body: bytes


class ArchiveStats(msgspec.Struct, frozen=True):
    """How many events an archive holds and how many bytes their bodies take."""

    events: int
    bytes: int


ArchiveEraseMatch = Callable[[ArchivedEvent], bool]
"""Whether an archived event is one an erasure removes."""


class ArchiveStoreError(Exception):
    """Base of the errors an archive store raises on purpose."""


class ArchiveStoreClosed(ArchiveStoreError):
    """The store is not open (not started yet, or closed)."""


class ArchiveCursorConflict(ArchiveStoreError):
    """`archive` was asked to store events at or below the bus's archive cursor: done already."""


class ArchiveStore(Protocol):
    """Archived events per archive uid. Use as `async with store:` or `start()`/`close()`."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def ping(self) -> None: ...

    async def cursor(self, bus: BusRef) -> int:
        """The position of the last event of the bus the archiver has looked at (0 at first)."""
        ...

    async def archive(
        self,
        bus: BusRef,
        position: int,
        entries: Sequence[tuple[str, StoredEvent]],
    ) -> None:
        """Store `(uid, event)` copies of the bus's events up to `position`; move the cursor there.

        Both happen or neither does. `position` must be above the cursor and every event at or
        below it (`ArchiveCursorConflict` otherwise). A run without copies still moves the cursor.
        """
        ...

    async def read_window(
        self,
        uid: str,
        start: datetime,
        end: datetime,
        after_seq: int = 0,
        limit: int = DEFAULT_ARCHIVE_READ,
    ) -> list[ArchivedEvent]:
        """Up to `limit` events of the archive recorded in `[start, end)` with `seq > after_seq`."""
        ...

    async def count_window(self, uid: str, start: datetime, end: datetime) -> int:
        """How many events of the archive were recorded in `[start, end)`."""
        ...

    async def stats(self, uids: Sequence[str]) -> dict[str, ArchiveStats]:
        """Event count and body bytes of each archive (zeros for one holding nothing)."""
        ...

    async def trim(self, uid: str, older_than: datetime) -> int:
        """Remove the archive's events recorded before `older_than`; return how many went."""
        ...

    async def drop(self, uid: str) -> int:
        """Remove all of the archive's events (it was deleted); return how many went."""
        ...

    async def erase(
        self, uids: Sequence[str], needle: bytes, matches: ArchiveEraseMatch
    ) -> list[ArchivedEvent]:
        """Remove the events of these archives for which `matches` is true; return them.

        Only events whose body contains `needle` (the erased value as it appears in JSON) are
        offered to `matches`, so the store can skip the rest without decoding them.
        """
        ...
