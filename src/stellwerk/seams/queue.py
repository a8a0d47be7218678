"""The delivery queue seam: deliveries waiting for their targets, leased, retried or dead.

One backend object implements `DeliveryQueue`; each consumer takes only the part it uses: the
router and replays a `RouteSink`, the worker a `WorkQueue`, the API a `DeadLetterQueue`,
retention `RouteCursors`, erasure `QueueErasure`, metrics `QueueDepths`, a peer site's standby
`PendingDeliveries`. How a delivery moves through its states, and what `route` and
`route_replay` promise, is in docs/delivery.md.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Final, NamedTuple, Protocol, Self

import msgspec

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams.history import Attempt

DEFAULT_DEAD_LETTER_PAGE: Final = 100
MAX_DEAD_LETTER_PAGE: Final = 1000


class NewDelivery(msgspec.Struct, frozen=True):
    """What the router puts in the queue for one (event, rule, target)."""

    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int  # the event's position in the bus's log
    recorded_time: datetime
    payload: bytes  # what the target receives: the event, or the input transformer's output
    content_type: str
    ordering_key: str | None = None  # set when the target asked for ordered delivery
    # A replay's delivery of an archived event unchanged (`archived_kept` > 0): the first
    # `archived_kept` bytes of `payload` are those of the archived copy `archived_seq`. A queue
    # that keeps its rows in the archive's file may store the rest alone and read those bytes
    # back from the archive (docs/storage.md, "Replayed deliveries point at the archive");
    # others ignore them. Two ints, not a tuple: a tracked object per delivery made the
    # pipeline's full garbage collections during a replay 2-3 times as many.
    archived_seq: int = 0
    archived_kept: int = 0


class Delivery(msgspec.Struct, frozen=True):
    """A delivery as leased from the queue; `attempts` counts attempts already made."""

    id: int
    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int
    recorded_time: datetime
    payload: bytes
    content_type: str
    attempts: int
    ordering_key: str | None = None
    last_error: str | None = None


class TargetKey(NamedTuple):
    """One target of one rule: the unit of concurrency budgets, ordering and metrics labels."""

    tenant: TenantName
    bus: str
    rule: str
    target_id: str


class LeasedDelivery(Delivery, frozen=True):
    """A delivery as `lease` hands it out.

    `age_from` is when its `maximum_event_age_seconds` starts counting: the event's recorded
    time, or the last redrive (so a redriven delivery gets a full age budget again).
    """

    age_from: datetime | None = None

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.tenant, self.bus, self.rule, self.target_id)

    @property
    def age_origin(self) -> datetime:
        return self.age_from if self.age_from is not None else self.recorded_time


class DeadLetter(msgspec.Struct, frozen=True):
    """A delivery in the dead-letter queue: what it carried and why it was given up."""

    id: int
    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int
    recorded_time: datetime
    dead_time: datetime
    attempts: int
    last_error: str | None
    payload: bytes
    content_type: str
    ordering_key: str | None = None


class QueueDepth(msgspec.Struct, frozen=True):
    """Unfinished and dead deliveries of one target, for the queue-depth metrics.

    `pending` counts ready and waiting deliveries, `in_flight` those leased now;
    `oldest_pending_seconds` is the age (from recorded time) of the oldest unfinished one.
    """

    key: TargetKey
    pending: int
    in_flight: int
    dead: int
    oldest_pending_seconds: float | None


class ReplayCursor(NamedTuple):
    """How far a replay got: the archive `seq` of the last event it routed, and how many events."""

    seq: int
    replayed: int


class ErasedDeliveries(NamedTuple):
    """Deliveries an erasure removed: those still on their way, dead letters, and recorded
    attempts (delivery history)."""

    pending: int
    dead: int
    attempts: int = 0


PayloadMatch = Callable[[bytes, str], bool]
"""`matches(payload, content_type)`: whether a delivery carries data an erasure removes."""


class DeliveryQueueError(Exception):
    """Base of the errors a delivery queue raises on purpose."""


class QueueClosed(DeliveryQueueError):
    """The queue is not open (not started yet, or closed)."""


class CursorConflict(DeliveryQueueError):
    """`route` was asked to route events at or below the bus's cursor: they were routed already.

    Two routers on one bus, or one that lost track of its cursor; nothing was written. Read
    `cursor` again and go on from there.
    """


class RouteCursors(Protocol):
    """How far routing got on each bus: what retention and erasure wait for."""

    async def cursor(self, bus: BusRef) -> int:
        """The position of the last event routed on the bus (0 before the first)."""
        ...


class RouteSink(RouteCursors, Protocol):
    """Where the router and replays put deliveries, each run together with its cursor."""

    async def route(self, bus: BusRef, position: int, deliveries: Sequence[NewDelivery]) -> None:
        """Enqueue the deliveries of the bus's events up to `position` and move its cursor there.

        Both happen or neither does. `position` and every delivery's position must be above
        the current cursor (`CursorConflict` otherwise: another router got there first), and
        every delivery must belong to the bus and be at most `position` (`ValueError`). A run
        of events without deliveries still moves the cursor.
        """
        ...

    async def route_replay(
        self,
        tenant: TenantName,
        replay: str,
        seq: int,
        events: int,
        deliveries: Sequence[NewDelivery],
        *,
        after: int,
    ) -> None:
        """Enqueue a replay's deliveries for the `events` archived events in (`after`, `seq`].

        Moves the replay's cursor from `after` to `seq` and adds `events` to its count; both
        happen with the enqueue or neither does. The cursor must be at `after`: a replay that
        another process moved meanwhile gets `CursorConflict`, however far it got (a batch that
        merely ends beyond the cursor may overlap what the other one sent). `seq` must be above
        `after` and every delivery must belong to `tenant` (`ValueError`). Replayed deliveries
        are due now and their maximum event age counts from now, like a redrive: a replay
        re-sends old events on purpose.
        """
        ...

    async def replay_cursor(self, tenant: TenantName, replay: str) -> ReplayCursor:
        """The replay's cursor: `ReplayCursor(0, 0)` before its first `route_replay`."""
        ...


class WorkQueue(Protocol):
    """What a delivery worker takes work from and reports outcomes to.

    Work may run more than once: a lease can expire while its worker is still busy, and an
    `ack`, `retry` or `dead_letter` by id is taken from whoever sends it.
    """

    async def lease(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_target_limits: Mapping[TargetKey, int] | None = None,
    ) -> list[LeasedDelivery]:
        """Lease up to `limit` ready deliveries due at `now`, each until `now + lease_seconds`.

        A target named in `per_target_limits` gets at most that many (its free concurrency
        slots); others share `limit`. Of an ordered group only the oldest unfinished delivery is
        ever ready, and only while no delivery of the group is in flight. Deliveries that are
        due longest come first.
        """
        ...

    async def ack(self, delivery_id: int, attempt: Attempt | None = None) -> None:
        """The delivery is finished: delivered, or dropped because its target keeps no DLQ.

        `attempt`, here and below, is the attempt that ended so: a backend that keeps delivery
        history (`DeliveryHistory`) writes it with the outcome, in the same commit.
        """
        ...

    async def ack_many(self, delivery_ids: Sequence[int], attempts: Sequence[Attempt] = ()) -> None:
        """`ack` each of them (with their `attempts`): one write for them all where the backend
        can."""
        ...

    async def retry(
        self,
        delivery_id: int,
        next_attempt_at: datetime,
        error: str,
        attempt: Attempt | None = None,
    ) -> None:
        """An attempt failed; count it, keep `error`, and make the delivery due again then."""
        ...

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Give leased deliveries back unattempted (a worker stopping): ready now, not counted."""
        ...

    async def dead_letter(
        self, delivery_id: int, error: str, attempt: Attempt | None = None
    ) -> None:
        """The last attempt failed for good; count it and move the delivery to the DLQ."""
        ...


class DeadLetterQueue(Protocol):
    """The dead deliveries of a bus, as the API pages through and redrives them."""

    async def dead_letters(
        self,
        bus: BusRef,
        *,
        rule: str | None = None,
        target_id: str | None = None,
        after: int = 0,
        limit: int = DEFAULT_DEAD_LETTER_PAGE,
    ) -> list[DeadLetter]:
        """Dead deliveries of a bus (optionally of one rule or target) with ids above `after`.

        In id order, at most `limit` (1..1000); page on with the last id as `after`.
        """
        ...

    async def redrive(self, bus: BusRef, ids: Sequence[int] | None = None) -> int:
        """Move dead deliveries of the bus (those with `ids`, or all) back to the queue.

        They are due now with their attempts reset to 0, and their maximum event age counts
        from now (`LeasedDelivery.age_from`), not from the event's recorded time: an operator
        who redrives after fixing a receiver means "try again", even for day-old events. Ids
        that are not dead deliveries of the bus are ignored. Returns how many were moved.
        """
        ...


class QueueErasure(RouteCursors, Protocol):
    """What an erasure needs of the queue: to wait for routing to pass, then to erase."""

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        positions: Collection[tuple[str, int]],
        needle: bytes,
        matches: PayloadMatch,
    ) -> ErasedDeliveries:
        """Remove the tenant's deliveries (of `bus`, or of every bus) that carry erased data.

        A delivery goes if its event's `(bus, position)` is in `positions` (events an erasure
        removed from the log or an archive), or if its payload contains `needle` and `matches`
        (an event the log no longer holds, e.g. a dead letter kept past retention). Ready,
        waiting, leased and dead deliveries alike: a worker that holds one finds it gone when
        it reports the outcome. Works a chunk at a time. Returns how many went.
        """
        ...


class QueueDepths(Protocol):
    """What the queue-depth metrics read."""

    async def depth(self) -> list[QueueDepth]:
        """Pending, in-flight and dead counts and the oldest pending age, per target."""
        ...


class PendingDeliveries(Protocol):
    """How far a bus's deliveries got: what a standby site follows (global endpoints)."""

    async def oldest_pending(self, bus: BusRef) -> datetime | None:
        """The recorded time of the bus's oldest unfinished delivery (ready, waiting or
        leased; not dead), or None when none is unfinished.

        Together with the cursor (read first) it says up to where every delivery is made:
        each event recorded before it, at or below the cursor, has no delivery left to make.
        """
        ...


class DeliveryQueue(
    RouteSink, WorkQueue, DeadLetterQueue, QueueErasure, QueueDepths, PendingDeliveries, Protocol
):
    """All of the queue, as one backend implements it and the composition root opens it.

    Use as `async with queue:` or `start()`/`close()`. Every method may raise `QueueClosed`.
    Times are timezone-aware datetimes.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...
