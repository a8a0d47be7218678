"""The collector path every tracking protocol shares: check each message, refine it
(enrichment and consent), make it a CloudEvent and take the request's events onto the bus in
one call.

`refine` is where enrichment and consent plug in: one call per message, on the collector path
before anything is stored, with what the request tells about its sender (`Arrival`) and the
source's settings (`Binding`). It returns the message to keep (changed or not), or None to drop
it (no consent, and the source says `drop`). It may change the message's top-level members in
place, but must copy a nested value before changing it: a batch's shared `context` can be one
object under several messages. `tracking.refine.Refiner` is the one the capability plugs in;
`keep` (every message as it came) is the default of a bare `Collector`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec

from stellwerk.events import MAX_EVENT_SIZE, SPECVERSION, CloudEvent
from stellwerk.ingest import DecodedEvent
from stellwerk.service import FailedEvent, Ingest, InvalidRequest
from stellwerk.tracking.metrics import TrackingMetrics
from stellwerk.tracking.model import Binding


class Problem(msgspec.Struct, omit_defaults=True):
    """What is wrong with one message: a machine-readable `error`, and the `field`."""

    error: str
    message: str
    field: str | None = None


class Failure(msgspec.Struct, omit_defaults=True):
    """A message that was not taken, by its place in the request."""

    index: int
    error: str
    message: str
    field: str | None = None
    id: str | None = None


class Arrival(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a request tells about the sender of all its messages: its IP address (the TCP
    peer's, or `X-Forwarded-For`'s from a proxy in uvicorn's `FORWARDED_ALLOW_IPS`), user
    agent, referrer, the page's origin (browsers only), the time it arrived (RFC 3339) and all
    its headers, names in lower case (client hints, `Sec-GPC`), but for `Authorization`, which
    holds the write key."""

    received_at: str
    ip: str | None = None
    user_agent: str | None = None
    referrer: str | None = None
    origin: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)


Refine = Callable[[dict[str, Any], Arrival, Binding], "dict[str, Any] | None"]


def keep(message: dict[str, Any], _arrival: Arrival, _binding: Binding) -> dict[str, Any]:
    """The refinement before enrichment and consent plug in: every message as it came."""
    return message


class TrackingProtocol(Protocol):
    """A tracking protocol's messages: what is wrong with one, and the event it becomes."""

    def check(self, message: Any) -> Problem | None: ...

    def tracked(self, message: dict[str, Any], source: str) -> Tracked: ...


class Collected(msgspec.Struct):
    """What became of a request's messages: `accepted` are durable now (duplicates of earlier
    ones included), `dropped` were kept out by `refine`, `failed` were refused."""

    accepted: int
    dropped: int
    failed: list[Failure]


_ID_FIELD: Final = "messageId"


class Tracked(msgspec.Struct, omit_defaults=True, gc=False):
    """A tracked event as `encode_event` encodes it, in its order: the context attributes a
    protocol sets (never `dataschema`, `data_base64` or extensions) and the data. Protocols
    make one straight from a message, and the collector encodes it without the intermediate
    `CloudEvent` and dict (byte for byte what `encode_event` gives)."""

    specversion: str
    id: str
    source: str
    type: str
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    data: Any = None

    def event(self) -> CloudEvent:
        """The same event as a `CloudEvent`."""
        return CloudEvent(
            id=self.id,
            source=self.source,
            type=self.type,
            time=self.time,
            subject=self.subject,
            datacontenttype=self.datacontenttype,
            data=self.data,
        )


def tracked(
    id: str, source: str, type: str, subject: str | None, time: str | None, data: Any
) -> Tracked:
    """A tracked event of JSON `data` (its message)."""
    return Tracked(SPECVERSION, id, source, type, subject, time, "application/json", data)


_encode: Final = msgspec.json.Encoder().encode


class Ready(msgspec.Struct, frozen=True, gc=False):
    """A message a protocol's own reader checked, refined and encoded already (as `refine`,
    `check` and `tracked` would have, byte for byte): the collector takes it as it is."""

    encoded: bytes
    id: str
    type: str
    subject: str | None
    sent_id: str | None  # the message's own id (None: `id` was made up), for its failure


class Dropped(msgspec.Struct, frozen=True, gc=False):
    """A message a protocol's own reader found `refine` drops (no consent)."""


DROPPED: Final = Dropped()


class Events(list[DecodedEvent]):
    """A request's messages as the Segment reader's C half gives them when it took every one:
    each message's `DecodedEvent` (checked, refined, encoded, within the size limit), at its
    message's place, numbered by it. The collector hands such a list to ingest as it is."""

    __slots__ = ()


class Collector:
    def __init__(
        self,
        ingest: Ingest,
        metrics: TrackingMetrics,
        refine: Refine = keep,
        quick: object = None,
    ) -> None:
        self._ingest = ingest
        self._metrics = metrics
        self.refine = refine
        self._quick = quick

    def quick(self) -> object:
        """The object whose method `refine` is, for protocols' own readers that give `Ready`
        messages (`segment_reader` takes the `Refiner`): None when `refine` is another callable
        (replaced), so that every message then passes that one."""
        quick = self._quick
        return quick if getattr(self.refine, "__self__", None) is quick is not None else None

    async def collect(
        self,
        binding: Binding,
        arrival: Arrival,
        messages: Sequence[Any],
        protocol: TrackingProtocol,
    ) -> Collected:
        """Take a request's messages onto the source's bus in one call of `Ingest.take`, under
        the guards of ingest (erasure suppressions, the bus's schemas, the tenant's event rate):
        returns once every accepted one is durable. Raises the `ServiceError` of a request
        refused as a whole (no message of it is then acknowledged)."""
        if type(messages) is Events:
            collected = await self._take(binding, messages, range(len(messages)), 0, [])
            self._counted(binding, collected)
            return collected
        events: list[DecodedEvent] = []
        places: list[int] = []  # each event's message, by index
        failed: list[Failure] = []
        dropped = 0
        source = binding.source
        for index, message in enumerate(messages):
            if type(message) is DecodedEvent:  # the C reader's (numbered among its own)
                message.index = len(events)
                events.append(message)
                places.append(index)
                continue
            if type(message) is Ready:
                if len(message.encoded) <= MAX_EVENT_SIZE:
                    events.append(
                        DecodedEvent(
                            len(events),
                            message.encoded,
                            message.id,
                            source,
                            message.type,
                            message.subject,
                        )
                    )
                    places.append(index)
                    continue
                failed.append(_too_large(index, len(message.encoded), message.sent_id))
                continue
            if message is DROPPED:
                dropped += 1
                continue
            problem = protocol.check(message)
            if problem is None:
                refined = self.refine(message, arrival, binding)
                if refined is None:
                    dropped += 1
                    continue
                event = protocol.tracked(refined, source)
                body = _encode(event)
                if len(body) <= MAX_EVENT_SIZE:
                    events.append(
                        DecodedEvent(
                            len(events),
                            body,
                            id=event.id,
                            source=source,
                            type=event.type,
                            subject=event.subject,
                        )
                    )
                    places.append(index)
                    continue
                problem = Problem(
                    "EventTooLarge",
                    f"the event is {len(body)} bytes encoded; the limit is {MAX_EVENT_SIZE} bytes",
                )
            message_id = message.get(_ID_FIELD) if isinstance(message, dict) else None
            failed.append(
                Failure(
                    index=index,
                    error=problem.error,
                    message=problem.message,
                    field=problem.field,
                    id=message_id if isinstance(message_id, str) else None,
                )
            )
        collected = await self._take(binding, events, places, dropped, failed)
        self._counted(binding, collected)
        return collected

    def _counted(self, binding: Binding, collected: Collected) -> None:
        tenant, name = binding.tenant.name, binding.name
        self._metrics.count(tenant, name, "accepted", collected.accepted)
        self._metrics.count(tenant, name, "dropped", collected.dropped)
        for failure in collected.failed:
            self._metrics.count(tenant, name, failure.error)

    async def _take(
        self,
        binding: Binding,
        events: list[DecodedEvent],
        places: Sequence[int],
        dropped: int,
        failed: list[Failure],
    ) -> Collected:
        if not events:
            return Collected(accepted=0, dropped=dropped, failed=failed)
        try:
            taken = await self._ingest.take_encoded(binding.tenant, binding.bus, events)
        except InvalidRequest as exc:
            # No event passed the bus's schemas: each is in the failed-events store.
            refused = msgspec.convert(exc.extra.get("failed", []), list[FailedEvent])
            if not refused:
                raise
            failed += [_failure(f, places) for f in refused]
            return Collected(accepted=0, dropped=dropped, failed=sorted(failed, key=_index))
        if taken.failed:
            failed = sorted([*failed, *(_failure(f, places) for f in taken.failed)], key=_index)
        return Collected(accepted=taken.accepted, dropped=dropped, failed=failed)


def _too_large(index: int, size: int, id: str | None) -> Failure:
    return Failure(
        index=index,
        error="EventTooLarge",
        message=f"the event is {size} bytes encoded; the limit is {MAX_EVENT_SIZE} bytes",
        id=id,
    )


def _failure(refused: FailedEvent, places: Sequence[int]) -> Failure:
    """An event ingest refused (its schema), as the failure of the message it was made of:
    the message is the event's `data`, so `data.properties.total` is `properties.total`."""
    field = refused.field
    if field is not None and field.startswith("data"):
        field = field.removeprefix("data").removeprefix(".") or None
    return Failure(
        index=places[refused.index],
        error=refused.error,
        message=refused.message,
        field=field,
        id=refused.id,
    )


def _index(failure: Failure) -> int:
    return failure.index
