"""Erasures: deleting a person's data, recorded as an audit entry before anything is erased.

An erasure deletes every event of the tenant (or of one bus) with a `subject`, or with a `value`
at a `field` path, from the log, the archives, the failed-events store and the delivery queue
(see docs/erasure.md). The work runs in the background; the entry shows its state and the counts
per store. The entry holds the criterion, so it is for admin keys only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

import msgspec

from stellwerk.auth import Principal
from stellwerk.erasure import CRITERION_SCHEMA, Criterion, ErasureRunner, InvalidCriterion, parse
from stellwerk.names import Name
from stellwerk.service.buses import Buses, checked_name
from stellwerk.service.errors import InvalidRequest, NotFound
from stellwerk.storage.control import ControlPlane, ErasureRecord, ErasureState

MAX_PAGE: Final = 500


class ErasureInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/erasures`.

    Give `subject` (the CloudEvents attribute), or `field` and `value`: `field` is a dotted path
    into the event, `data.…` or a top-level attribute (`source`, an extension such as `userid`),
    and `value` a string, number or boolean; arrays on the way match if any element does.
    `bus` limits the erasure to one bus (default: every bus of the tenant). With `suppress`, an
    erased event that arrives again (same source and id, same bus) is answered as accepted and
    counted as a duplicate, but not stored.
    """

    subject: str | None = None
    field: str | None = None
    value: str | int | float | bool | None = None
    bus: Name | None = None
    suppress: bool = False


# The body as the API's document shows it: which fields go together is `parse`'s rule, and
# msgspec's schema of the struct alone cannot say it.
ErasureRequest = Annotated[ErasureInput, msgspec.Meta(extra_json_schema=CRITERION_SCHEMA)]


class Erasure(msgspec.Struct):
    """An erasure's audit entry. `state` is `running`, then `completed` or `failed` (`error`);
    `counts` has the events erased per store so far: `log`, `archives`, `failed_events`,
    `deliveries` (still on their way), `dead_letters` and `attempts` (delivery history)."""

    id: str
    state: ErasureState
    bus: str | None
    criterion: Criterion
    suppress: bool
    counts: dict[str, int]
    error: str | None
    requested_by: str | None
    requested_at: datetime
    finished_at: datetime | None


def _view(record: ErasureRecord) -> Erasure:
    return Erasure(
        id=record.id,
        state=record.state,
        bus=record.bus,
        criterion=msgspec.convert(record.criterion, Criterion),
        suppress=record.suppress,
        counts=record.counts,
        error=record.error,
        requested_by=record.requested_by,
        requested_at=record.requested_at,
        finished_at=record.finished_at,
    )


class Erasures:
    def __init__(self, control: ControlPlane, buses: Buses, runner: ErasureRunner) -> None:
        self._control = control
        self._buses = buses
        self._runner = runner

    async def request(self, principal: Principal, body: ErasureInput) -> Erasure:
        try:
            criterion = parse(body.subject, body.field, body.value)
        except InvalidCriterion as exc:
            raise InvalidRequest(str(exc), field=exc.field) from None
        if body.bus is not None:
            await self._buses.record(principal.tenant_id, checked_name("bus", body.bus, "bus"))
        record = await self._runner.request(
            principal.tenant_id,
            principal.tenant,
            bus=body.bus,
            criterion=criterion,
            suppress=body.suppress,
            requested_by=principal.key_id,
        )
        return _view(record)

    async def get(self, principal: Principal, erasure_id: str) -> Erasure:
        record = await self._control.erasures.get(principal.tenant_id, erasure_id)
        if record is None:
            raise NotFound.of(f"erasure {erasure_id!r}")
        return _view(record)

    async def recent(self, principal: Principal, before: str | None, limit: int) -> list[Erasure]:
        records = await self._control.erasures.recent(
            principal.tenant_id, before=before, limit=limit
        )
        return [_view(r) for r in records]
