"""The event log's contract, checked once for every backend.

Backends subclass `CheckedEventLog`. Its `append`, `read` and `read_window` refuse what the seam
refuses (`ValueError`: a body that is not one compact JSON object, a read without a positive
limit) before the backend's `_append`, `_read_after` and `_read_window` see the call.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Self

from stellwerk.refs import BusRef
from stellwerk.seams import (
    DEFAULT_READ_LIMIT,
    Announce,
    AppendResult,
    EventLog,
    NewEvent,
    StoredEvent,
)


class CheckedEventLog(EventLog):
    """An `EventLog` whose arguments are checked before the backend's hooks run."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def append(
        self, batch: Sequence[NewEvent], announce: Announce | None = None
    ) -> list[AppendResult]:
        for event in batch:
            body = event.body
            if len(body) < 3 or body[0] != 0x7B or body[-1] != 0x7D:  # "{...}"
                raise ValueError(f"event {event.id!r}: body must be one compact JSON object")
        return await self._append(batch, announce)

    async def read(
        self, bus: BusRef, after: int = 0, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        check_limit(limit)
        return await self._read_after(bus, after, limit)

    async def read_window(
        self,
        bus: BusRef,
        start: datetime,
        end: datetime,
        after: int = 0,
        limit: int = DEFAULT_READ_LIMIT,
    ) -> list[StoredEvent]:
        check_limit(limit)
        return await self._read_window(bus, start, end, after, limit)

    @abstractmethod
    async def _append(
        self, batch: Sequence[NewEvent], announce: Announce | None
    ) -> list[AppendResult]:
        """`append` of events whose bodies are JSON objects (the batch may be empty)."""

    @abstractmethod
    async def _read_after(self, bus: BusRef, after: int, limit: int) -> list[StoredEvent]:
        """`read` with a positive limit."""

    @abstractmethod
    async def _read_window(
        self, bus: BusRef, start: datetime, end: datetime, after: int, limit: int
    ) -> list[StoredEvent]:
        """`read_window` with a positive limit."""


def check_limit(limit: int) -> None:
    # A read must never be unbounded (SQLite, for one, reads a negative LIMIT as none at all).
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
