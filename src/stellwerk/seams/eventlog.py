"""The event log seam: append batches durably, read a bus from a position or a time window, trim.

Appends are idempotent per bus (the same `id` and `source` within the dedup window is a
duplicate); positions grow per bus but need not be dense (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol, Self

import msgspec

from stellwerk.events import CloudEvent, encode_event
from stellwerk.refs import BusRef, TenantName

DEFAULT_DEDUP_WINDOW: Final = timedelta(hours=24)
DEFAULT_READ_LIMIT: Final = 1000

# The values made per event (`gc=False`) hold only strings, numbers, bytes and times, so they can
# never be part of a reference cycle: left out of the garbage collector's tracking, a batch of
# 100 events no longer sets off a collection of the young generation every other request.


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append to a tenant's bus.

    `body` is the event in the CloudEvents JSON format as made by `stellwerk.events.encode_event`:
    one compact object from `{` to `}`. The log adds `tenant`, `bus` and `recordedtime` to it
    (overriding any values already there). `id`, `source`, `type` and `subject` repeat the event's
    attributes so the log can index them without decoding the body.
    """

    tenant: TenantName
    bus: str
    id: str
    source: str
    type: str
    subject: str | None
    body: bytes

    @classmethod
    def of(
        cls, tenant: TenantName, bus: str, event: CloudEvent, body: bytes | None = None
    ) -> NewEvent:
        """The event for a bus; pass `body` when the event is already encoded (as ingest has it)."""
        encoded = body if body is not None else encode_event(event)
        return cls(tenant, bus, event.id, event.source, event.type, event.subject, encoded)


class AppendStatus(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"


class AppendResult(msgspec.Struct, frozen=True, gc=False):
    """What became of one event: stored at `position`, or a duplicate of the event there."""

    status: AppendStatus
    position: int

    @property
    def duplicate(self) -> bool:
        return self.status is AppendStatus.DUPLICATE


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the log holds it; `body` is its JSON with Stellwerk's extensions set."""

    tenant: TenantName
    bus: str
    position: int
    id: str
    source: str
    type: str
    subject: str | None
    recorded_time: datetime
    body: bytes


class ErasedEvent(msgspec.Struct, frozen=True, gc=False):
    """Where an erased event was and its key: what an erasure needs to know, without its data.

    The key (`source`, `id`) is what suppression keeps out when the event arrives again.
    """

    tenant: TenantName
    bus: str
    position: int
    id: str
    source: str


Announce = Callable[[Sequence[AppendResult], bytes], None]
"""Told, on the appending event loop, a batch's results and the recorded time its stored events
get (the `recordedtime` text as stored) once both are fixed (`EventLog.append`)."""

EraseMatch = Callable[[StoredEvent], bool]
"""Whether a stored event is one an erasure removes."""

EraseHook = Callable[[Sequence[ErasedEvent]], Awaitable[None]]
"""Awaited with each chunk of events an erasure found, before they are erased."""


class EventLogError(Exception):
    """Base of the errors an event log raises on purpose."""


class LogOverloaded(EventLogError):
    """The log cannot take more now; answer 503 and ask the client to retry after a while."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LogUnavailable(LogOverloaded):
    """The log's storage cannot take writes now (a full or read-only disk, I/O errors). Nothing
    of the refused append was stored. `code` names the reason for machines
    (`DataDirectoryFull`, ...), the message says it for people; it passes once the operator
    makes room, so the client retries after `retry_after` seconds."""

    def __init__(self, message: str, *, code: str, retry_after: float = 5.0) -> None:
        super().__init__(message, retry_after)
        self.code = code

    def again(self) -> LogUnavailable:
        """The same refusal as a new exception (one per caller: each gets its own traceback)."""
        copy = LogUnavailable(str(self), code=self.code, retry_after=self.retry_after)
        copy.__cause__ = self.__cause__
        return copy


class LogClosed(EventLogError):
    """The log is not open (not started yet, or closed)."""


class EventLog(Protocol):
    """A durable, append-only log of events per tenant and bus.

    Use as `async with log:` or call `start()` and `close()`. Every method may raise `LogClosed`.
    """

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop taking appends, finish those already taken, and release the storage."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def ping(self) -> None:
        """Return if the log can take appends and serve reads now; raise `EventLogError` if not."""
        ...

    async def append(
        self, batch: Sequence[NewEvent], announce: Announce | None = None
    ) -> list[AppendResult]:
        """Store a batch (one HTTP request's events); return when every stored event is durable.

        Results are in batch order. Raises `LogOverloaded` instead of queueing without bound.

        `announce` is called once the results and the recorded time are fixed, and before this
        returns: the SQLite log calls it while the batch's group is being written and synced
        (what waits for another copy, a peer site's, can then start it beside the local one),
        JetStream once its acknowledgements are in. If the append then fails, nothing of the
        batch is stored although it was announced, and the positions may be given again.
        """
        ...

    async def read(
        self, bus: BusRef, after: int = 0, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        """Up to `limit` events of a bus with positions above `after`, in log order."""
        ...

    async def read_window(
        self,
        bus: BusRef,
        start: datetime,
        end: datetime,
        after: int = 0,
        limit: int = DEFAULT_READ_LIMIT,
    ) -> list[StoredEvent]:
        """Like `read`, limited to events recorded in `[start, end)`; page on with `after`."""
        ...

    async def last_position(self, bus: BusRef) -> int:
        """The position of the newest event ever stored on the bus (0 if none), trimmed or not."""
        ...

    async def trim(self, older_than: datetime, keep: Mapping[BusRef, int] | None = None) -> int:
        """Remove events recorded before `older_than` on every bus; return how many went.

        `keep` maps a bus to a position: that bus's events above it stay however old
        (retention passes the positions its router and archiver have not consumed yet). A
        backend may keep a few more events than asked (the SQLite log trims whole segments).
        """
        ...

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None = None,
    ) -> list[ErasedEvent]:
        """Erase the tenant's events (of `bus`, or of every bus) for which `matches` is true.

        Only events whose body contains `needle` are offered to `matches` (b"" offers all), so a
        backend can skip the rest without decoding them. An erased event keeps its position but
        loses its body and attributes: reads skip it, and `limit` counts only events returned.
        Events recorded after the erase began are not looked at. The work goes a chunk at a
        time, so appends never wait long for it; `before` is awaited with each chunk's events
        before they are erased (to record what must outlive them), and if it raises, that chunk
        and the rest stay. Returns the erased events, by bus in log order.

        An erased event's key stays in the dedup window: the same event appended again within
        it is still answered as a duplicate (of the erased position) and not stored.
        """
        ...
