"""The failed-events store of a bus: list (filtered), re-submit after a fix, or discard.

Re-submitting checks each event against the schema as it is now: events that pass are put on the
bus (keeping their id, so a re-submission twice is stored once) and marked re-submitted; the rest
stay with their new errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from stellwerk.auth import Principal
from stellwerk.events import EventError, validate_event
from stellwerk.schemas import compile_schema, event_violations
from stellwerk.seams import EventLog, LogOverloaded, NewEvent
from stellwerk.service.buses import Buses
from stellwerk.service.errors import NotFound, log_refused
from stellwerk.storage import LogWatch
from stellwerk.storage.control import ControlPlane, FailedEventRecord
from stellwerk.storage.control import FailedEventFilter as FailedEventFilter

MAX_RESUBMIT = 1000


class FailedEventView(msgspec.Struct):
    id: int
    event_id: str
    source: str
    type: str
    reason: str
    errors: list[dict[str, str]]
    received_at: datetime
    resubmitted_at: datetime | None
    event: Any


class ResubmitOutcome(msgspec.Struct, omit_defaults=True):
    id: int
    resubmitted: bool
    message: str | None = None


class ResubmitResult(msgspec.Struct):
    resubmitted: int
    still_failing: int
    results: list[ResubmitOutcome]


def _view(record: FailedEventRecord) -> FailedEventView:
    return FailedEventView(
        id=record.id,
        event_id=record.event_id,
        source=record.source,
        type=record.type,
        reason=record.reason,
        errors=record.errors,
        received_at=record.received_at,
        resubmitted_at=record.resubmitted_at,
        event=msgspec.json.decode(record.body),
    )


class FailedEvents:
    def __init__(
        self, control: ControlPlane, buses: Buses, event_log: EventLog, log_watch: LogWatch
    ) -> None:
        self._control = control
        self._buses = buses
        self._log = event_log
        self._watch = log_watch

    async def find(
        self,
        principal: Principal,
        bus: str,
        where: FailedEventFilter,
        *,
        after: int,
        limit: int,
    ) -> list[FailedEventView]:
        await self._buses.record(principal.tenant_id, bus)
        records = await self._control.failed_events.find(
            principal.tenant_id, bus, where, after=after, limit=limit
        )
        return [_view(r) for r in records]

    async def resubmit(
        self, principal: Principal, name: str, ids: list[int] | None
    ) -> ResubmitResult:
        """Put the failed events `ids` (None: up to `MAX_RESUBMIT` of the bus) on the bus again,
        those that pass the schema as it is now."""
        control = self._control
        bus = await self._buses.record(principal.tenant_id, name)
        if ids is None:
            records = await control.failed_events.find(
                principal.tenant_id, name, FailedEventFilter(), limit=MAX_RESUBMIT
            )
        else:
            records = await control.failed_events.get(principal.tenant_id, name, ids[:MAX_RESUBMIT])
            missing = set(ids) - {r.id for r in records}
            if missing:
                raise NotFound.of(f"failed events {sorted(missing)}")

        outcomes: list[ResubmitOutcome] = []
        passing: list[tuple[FailedEventRecord, NewEvent]] = []
        for record in records:
            if record.resubmitted_at is not None:
                outcomes.append(ResubmitOutcome(record.id, False, "already re-submitted"))
                continue
            try:
                event = validate_event(msgspec.json.decode(record.body))
            except EventError as exc:
                outcomes.append(ResubmitOutcome(record.id, False, str(exc)))
                continue
            schema_record = await control.schemas.get(principal.tenant_id, event.type)
            violations = []
            if bus.schema_validation == "enforce" and schema_record is not None:
                violations = event_violations(event, compile_schema(schema_record.document))
            if violations:
                errors = [{"path": v.path, "message": v.message} for v in violations]
                await control.failed_events.update_errors(principal.tenant_id, record.id, errors)
                outcomes.append(ResubmitOutcome(record.id, False, violations[0].message))
                continue
            new = NewEvent(
                tenant=principal.tenant,
                bus=name,
                id=event.id,
                source=event.source,
                type=event.type,
                subject=event.subject,
                body=record.body,
            )
            passing.append((record, new))
        if passing:
            try:
                await self._log.append([new for _, new in passing])
            except LogOverloaded as exc:
                raise log_refused(exc, "the event log is overloaded") from None
            self._watch.appended(principal.bus(name))
            await control.failed_events.mark_resubmitted(
                principal.tenant_id, [record.id for record, _ in passing]
            )
            outcomes.extend(ResubmitOutcome(record.id, True) for record, _ in passing)
        outcomes.sort(key=lambda o: o.id)
        done = sum(1 for o in outcomes if o.resubmitted)
        return ResubmitResult(done, len(outcomes) - done, outcomes)

    async def discard(self, principal: Principal, bus: str, id_: int) -> None:
        if not await self._control.failed_events.delete(principal.tenant_id, bus, id_):
            raise NotFound.of(f"failed event {id_}")
