"""Ingest: one request's events onto a bus, answered only once every accepted event is durable.

A batch may partly succeed: valid events are stored and the others are listed in `failed` with
their index, id and reason. A request in which no event is valid is refused as a whole with the
same list, so that a single bad event (structured or binary mode) gets a plain client error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

import msgspec

from stellwerk.auth import Principal
from stellwerk.erasure import Suppressions
from stellwerk.events import CloudEvent, check_event_size
from stellwerk.ingest import (
    BindingError,
    BindingLimits,
    BusMetrics,
    DecodedEvent,
    EventFailure,
    IngestMetrics,
    bus_metrics,
    decode_request,
)
from stellwerk.refs import BusRef, TenantId, TenantRef
from stellwerk.schemas import SchemaViolation, event_violations
from stellwerk.seams import (
    Announce,
    AppendResult,
    AppendStatus,
    EventLog,
    LogOverloaded,
    LogUnavailable,
    NewEvent,
)
from stellwerk.service.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestRateSpent,
    ServiceError,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
    log_refused,
)
from stellwerk.service.quotas import LEFT_TO_INGEST, Quotas, RequestToken, TenantRate
from stellwerk.storage import LogWatch
from stellwerk.storage.control import BusDirectory, BusRecord, ControlPlane, NewFailedEvent

SCHEMA_FAILURE = "SchemaValidationFailed"
_encode: Final = msgspec.json.Encoder().encode


class AppendCompanion(Protocol):
    """Work that goes beside one request's append (a peer site's copy of its events)."""

    def announce(self, results: Sequence[AppendResult], recorded: bytes) -> None:
        """The log fixed the results and the recorded time; the events are not durable yet."""
        ...

    async def finish(self) -> None:
        """Awaited once the events are durable, before the request is answered. It must not
        raise: the events are stored, and the client would send them again."""
        ...


BesideAppend = Callable[[TenantRef, str, Sequence[NewEvent]], AppendCompanion | None]
"""Asked before each ingest request's append, with the tenant, the bus and the batch: the
request's companion, or None when there is nothing to do beside it."""

_BINDING_ERRORS: Final[dict[int, type[ServiceError]]] = {
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


class Problem(msgspec.Struct, omit_defaults=True):
    """One thing wrong with an event, as `error`, `message` and `field` of an answer say it."""

    error: str
    message: str
    field: str | None = None


class FailedEvent(msgspec.Struct, omit_defaults=True):
    """An event that was not put on the bus. `failed_event_id`: kept in the failed-events store.

    `error`, `message` and `field` describe the first problem; `errors` lists every one found.
    """

    index: int
    error: str
    message: str
    id: str | None = None
    field: str | None = None
    failed_event_id: int | None = None
    errors: list[Problem] = msgspec.field(default_factory=list)


class SchemaWarning(msgspec.Struct):
    """An event stored although it breaks its type's schema (bus in `warn` mode)."""

    index: int
    id: str
    message: str


class IngestResult(msgspec.Struct):
    """`accepted` counts every event that is durable now, duplicates of earlier ones included.

    An event an erasure keeps out (suppression, see docs/erasure.md) is answered like a
    duplicate: counted in `accepted` and in `duplicates`, and not stored.

    `warnings` appears only on buses in `warn` mode, for stored events that break their schema.
    """

    accepted: int
    failed: list[FailedEvent]
    duplicates: int = 0
    warnings: list[SchemaWarning] | msgspec.UnsetType = msgspec.UNSET


def _failed(failure: EventFailure) -> FailedEvent:
    return FailedEvent(
        index=failure.index,
        id=failure.id,
        error=str(failure.code),
        message=failure.message,
        field=failure.attribute,
        errors=[Problem(str(p.code), p.message, p.attribute) for p in failure.problems],
    )


class Ingest:
    def __init__(
        self,
        *,
        control: ControlPlane,
        buses: BusDirectory,
        event_log: EventLog,
        log_watch: LogWatch,
        suppressions: Suppressions,
        metrics: IngestMetrics,
        limits: BindingLimits,
        event_rate: TenantRate,
        request_rate: TenantRate | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._control = control
        self._buses = buses
        self._log = event_log
        self._watch = log_watch
        self._suppressions = suppressions
        self._metrics = metrics
        self._limits = limits
        self._event_rate = event_rate
        self._request_rate = request_rate
        self._quotas = quotas
        self._beside: BesideAppend | None = None

    def beside_append(self, hook: BesideAppend) -> None:
        """Let `hook` go beside each ingest request's append (not `publish`'s): a capability
        that must hold the answer back until it has done its part, and would start it before
        the events are durable (a peer site's acknowledgement of synchronous replication,
        whose peer request goes out while the log syncs). One hook at a time."""
        self._beside = hook

    async def put(
        self,
        principal: Principal,
        name: str,
        content_type: str | None,
        headers: Mapping[str, str],
        read_body: Callable[[], Awaitable[bytes]],
        *,
        request_counted: bool = True,
    ) -> bytes:
        """Take one request's events onto bus `name`: the JSON body of the 202 answer.

        Raises a `ServiceError` for a request refused as a whole. Returns only once every
        accepted event is durable. The body is read once the bus is known to exist.

        `request_counted` False: the gate left the tenant's request token to this call, which
        takes it with the events' tokens (one round trip to a shared limiter), or alone when
        the request is refused before.
        """
        pending = None if request_counted else RequestToken(principal.tenant_id)
        try:
            buses = self._buses
            tenant_id = principal.tenant_id
            bus = buses.held(tenant_id, name) or await buses.bus(tenant_id, name)
            if bus is None:
                raise NotFound.of(f"bus {name!r}")
            body = await read_body()
            metrics = bus_metrics(self._metrics, principal.tenant, name)
            metrics.bytes_in.inc(len(body))
            try:
                results = decode_request(content_type, headers, body, self._limits)
            except BindingError as exc:
                metrics.rejected(str(exc.code)).inc()
                refusal = _BINDING_ERRORS.get(exc.status, InvalidRequest)
                raise refusal(exc.message, code=str(exc.code)) from None

            decoded: list[DecodedEvent] = []
            failed: list[FailedEvent] = []
            for result in results:
                if isinstance(result, DecodedEvent):
                    decoded.append(result)
                else:
                    failed.append(_failed(result))
                    metrics.rejected(failed[-1].error).inc()
            taken = await self._take(principal.ref, name, bus, decoded, failed, metrics, pending)
        except ServiceError:
            if pending is not None and not pending.taken:
                await self.count_request(principal)
            raise
        if not taken.failed and not taken.duplicates and taken.warnings is msgspec.UNSET:
            return b'{"accepted":%d,"failed":[],"duplicates":0}' % taken.accepted
        return _encode(taken)

    async def count_request(self, principal: Principal) -> None:
        """Take the request's token alone (a request refused before its events' turn):
        `TooManyRequests` when the tenant's request rate is spent."""
        if self._request_rate is None:
            return
        spent = await self._request_rate.acquire(principal.tenant_id)
        if spent is not None:
            raise RequestRateSpent(
                f"the tenant's request rate limit ({spent.rate:g}/s) is exhausted",
                retry_after=spent.retry_after,
            )

    async def take(
        self, tenant: TenantRef, name: str, events: Sequence[CloudEvent], bodies: Sequence[bytes]
    ) -> IngestResult:
        """Take events that a capability made from an outside request (a tracker's messages)
        onto bus `name`, under the guards of `put`: erasure suppressions, the bus's schemas
        (events refused by one are kept in the failed-events store and listed in `failed` by
        their index in `events`) and the tenant's event rate. `bodies` are the events as
        `encode_event` encoded them, each within the size limit. Returns only once every
        accepted event is durable.

        Raises `NotFound` for a bus that does not exist, `InvalidRequest` (with `failed`) when
        no event may be stored, `TooManyRequests` and `Unavailable` as `put` does.
        """
        decoded = [
            DecodedEvent.of(index, event, body)
            for index, (event, body) in enumerate(zip(events, bodies, strict=True))
        ]
        return await self.take_encoded(tenant, name, decoded)

    async def take_encoded(
        self, tenant: TenantRef, name: str, events: list[DecodedEvent]
    ) -> IngestResult:
        """`take` for events a capability encoded itself, as `encode_event` encodes them (one
        object, within the size limit, none of Stellwerk's own extensions), numbered from 0 in
        order: a `DecodedEvent` made without its `CloudEvent` decodes one only if a schema
        check needs it."""
        bus = await self._buses.bus(tenant.id, name)
        if bus is None:
            raise NotFound.of(f"bus {name!r}")
        metrics = bus_metrics(self._metrics, tenant.name, name)
        return await self._take(tenant, name, bus, events, [], metrics)

    async def _take(
        self,
        tenant_ref: TenantRef,
        name: str,
        bus: BusRecord,
        decoded: list[DecodedEvent],
        failed: list[FailedEvent],
        metrics: BusMetrics,
        pending: RequestToken | None = None,
    ) -> IngestResult:
        """The valid events of a request onto the bus, past the guards that follow decoding:
        suppressions, schemas, the event rate. `failed`: what decoding refused already.
        `pending`: the request's token is taken here too, with the events' (by default the
        one the gate left to ingest in this task, `LEFT_TO_INGEST`, if not taken yet).

        The one point every ingest route passes: each call is counted as a request, and as an
        error when this site failed it (a 5xx, not a refusal of the client's input)."""
        metrics.requests.inc()
        if pending is None:
            pending = LEFT_TO_INGEST.get()
        if pending is not None and (pending.taken or pending.tenant_id != tenant_ref.id):
            pending = None
        # The guards and the append in this one frame (not a wrapped call): every request's
        # wait for its commit passes each frame between the task and the log twice.
        try:
            tenant_id = tenant_ref.id
            # Before the schema check: a suppressed event must not land in the failed-events
            # store.
            suppressions = self._suppressions
            if suppressions.none_held(tenant_id, name):
                suppressed = 0
            else:
                decoded, suppressed = await suppressions.drop(
                    tenant_id, tenant_ref.name, name, decoded
                )
            warnings: list[SchemaWarning] = []
            if bus.schema_validation != "off" and decoded:
                decoded, refused, warnings = await self._check_schemas(
                    tenant_id, name, decoded, enforce=bus.schema_validation == "enforce"
                )
                failed = sorted([*failed, *refused], key=lambda f: f.index)
                self._metrics.failed_validation.labels(
                    tenant_ref.name, name, bus.schema_validation
                ).inc(len(refused) + len(warnings))
            if not decoded and not suppressed:
                if not failed:
                    raise InvalidRequest("the request holds no events")
                first = failed[0]
                raise InvalidRequest(
                    first.message
                    if len(failed) == 1
                    else f"no event is valid; first: {first.message}",
                    code=first.error,
                    field=first.field,
                    errors=msgspec.to_builtins(first.errors) or None,
                    accepted=0,
                    failed=[msgspec.to_builtins(f) for f in failed],
                )

            if pending is None or self._request_rate is None or self._quotas is None:
                spent = await self._event_rate.acquire(tenant_id, len(decoded))
                what = "event"
            else:
                pending.taken = True
                quotas, request_rate, event_rate = (
                    self._quotas,
                    self._request_rate,
                    self._event_rate,
                )
                limited = (
                    None
                    if quotas.unlimited_held(tenant_id, (request_rate, event_rate))
                    else await quotas.acquire_together(
                        tenant_id, [(request_rate, 1.0), (event_rate, len(decoded))]
                    )
                )
                spent = None if limited is None else limited[1]
                what = (
                    "request"
                    if limited is not None and limited[0] is self._request_rate
                    else "event"
                )
            if spent is not None:
                metrics.rejected("TooManyRequests").inc(len(decoded))
                refusal = RequestRateSpent if what == "request" else TooManyRequests
                raise refusal(
                    f"the tenant's {what} rate limit ({spent.rate:g}/s) is exhausted",
                    retry_after=spent.retry_after,
                )

            tenant = tenant_ref.name
            batch = [
                NewEvent(tenant, name, d.id, d.source, d.type, d.subject, d.encoded)
                for d in decoded
            ]
            companion = self._beside(tenant_ref, name, batch) if self._beside is not None else None
            announce: Announce | None = companion.announce if companion is not None else None
            try:
                appended = await self._log.append(batch, announce)
            except LogOverloaded as exc:
                unavailable = log_refused(exc, "the event log is overloaded")
                reason = unavailable.code if isinstance(exc, LogUnavailable) else "Overloaded"
                metrics.rejected(reason).inc(len(batch))
                raise unavailable from None
            self._watch.appended(tenant_ref.bus(name))
            # Counted in C: a property call per event was a tenth of a µs of the loop thread's.
            duplicates = [outcome.status for outcome in appended].count(AppendStatus.DUPLICATE)
            if companion is not None:
                await companion.finish()
            metrics.accepted.inc(len(batch) - duplicates)
            if duplicates:
                metrics.duplicates.inc(duplicates)
            return IngestResult(
                accepted=len(batch) + suppressed,
                failed=failed,
                duplicates=duplicates + suppressed,
                warnings=warnings or msgspec.UNSET,
            )
        except Exception as exc:
            if not isinstance(exc, ServiceError) or isinstance(exc, Unavailable):
                metrics.request_errors.inc()
            raise

    async def publish(self, tenant: TenantRef, bus: str, events: Sequence[CloudEvent]) -> list[int]:
        """Append events that Stellwerk makes itself (a capability's, such as status changes)
        to bus `bus`, durably, as ingest does a request's: their positions, in order.

        Bypasses what guards the edge (keys, rate limits, schemas): the caller is trusted code.
        Raises `NotFound` for a bus that does not exist, `Unavailable` when the log refuses.
        """
        if not events:
            return []
        if await self._buses.bus(tenant.id, bus) is None:
            raise NotFound.of(f"bus {bus!r}")
        batch = [NewEvent.of(tenant.name, bus, event) for event in events]
        for new in batch:
            check_event_size(new.body)
        try:
            appended = await self._log.append(batch)
        except LogOverloaded as exc:
            raise log_refused(exc, "the event log is overloaded") from None
        self._watch.appended(BusRef(tenant.name, bus))
        bus_metrics(self._metrics, tenant.name, bus).accepted.inc(
            sum(1 for outcome in appended if not outcome.duplicate)
        )
        return [outcome.position for outcome in appended]

    async def _check_schemas(
        self, tenant_id: TenantId, bus: str, decoded: list[DecodedEvent], *, enforce: bool
    ) -> tuple[list[DecodedEvent], list[FailedEvent], list[SchemaWarning]]:
        """Split events by their type's schema: kept, refused (stored as failed events), warned."""
        kept: list[DecodedEvent] = []
        refused: list[tuple[DecodedEvent, list[SchemaViolation]]] = []
        warnings: list[SchemaWarning] = []
        for item in decoded:
            schema = await self._buses.schema(tenant_id, item.type)
            violations = event_violations(item.event, schema) if schema else []
            if not violations:
                kept.append(item)
            elif enforce:
                refused.append((item, violations))
            else:
                kept.append(item)
                warnings.append(SchemaWarning(item.index, item.id, describe(violations)))
        if not refused:
            return kept, [], warnings
        ids = await self._control.failed_events.add(
            tenant_id,
            [
                NewFailedEvent(
                    bus=bus,
                    event_id=item.id,
                    source=item.source,
                    type=item.type,
                    reason=SCHEMA_FAILURE,
                    errors=[{"path": v.path, "message": v.message} for v in violations],
                    body=item.encoded,
                )
                for item, violations in refused
            ],
        )
        failures = [
            FailedEvent(
                index=item.index,
                id=item.id,
                error=SCHEMA_FAILURE,
                message=describe(violations),
                field=_data_field(violations[0]),
                failed_event_id=failed_id,
                errors=[Problem(SCHEMA_FAILURE, v.message, _data_field(v)) for v in violations],
            )
            for (item, violations), failed_id in zip(refused, ids, strict=True)
        ]
        return kept, failures, warnings


def _data_field(violation: SchemaViolation) -> str:
    return "data" + violation.path.rstrip("/").replace("/", ".")


def describe(violations: list[SchemaViolation]) -> str:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"data does not match the schema of its type at {first.path}: {first.message}{more}"
