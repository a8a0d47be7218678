"""Replays: re-send the events an archive holds from a time window `[start, end)` to the rules of
the archive's bus (all of them, or those named).

Everything about the request is checked before the replay is recorded, so that a replay that
starts can run: the window must be in the past and not empty, the archive must be the bus's, and
every rule named must be one of the bus's rules. A name is used once per tenant, for good: its
cursor stays with it. The runner (`stellwerk.routing`) does the work in the background.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, get_args

import msgspec

from stellwerk.auth import Principal
from stellwerk.clock import utc_now
from stellwerk.events import Rfc3339, parse_rfc3339
from stellwerk.names import Name
from stellwerk.refs import TenantId, TenantName
from stellwerk.seams import RouteSink
from stellwerk.service.buses import checked_name
from stellwerk.service.errors import Conflict, InvalidRequest, NotFound
from stellwerk.storage.control import (
    ConflictError,
    ControlPlane,
    NewReplay,
    ReplayRecord,
    ReplayState,
)

MAX_RULES: Final = 300
MAX_DESCRIPTION: Final = 512


class ReplayInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/replays`. `start` and `end` are RFC 3339; `end` is exclusive."""

    name: Name
    archive: Name
    bus: Name
    start: Rfc3339
    end: Rfc3339
    rules: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=MAX_RULES)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""


class Replay(msgspec.Struct):
    """A replay: `rules` is null for every rule of the bus; `state` is `queued` while it waits
    for a free slot, then `running`, and ends `completed`, `cancelled` or `failed` (`error`)."""

    name: str
    bus: str
    archive: str
    start: datetime
    end: datetime
    rules: list[str] | None
    description: str
    state: ReplayState
    replayed: int
    total: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _time(body: ReplayInput, field: str) -> datetime:
    text: str = getattr(body, field)
    try:
        return parse_rfc3339(text).astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: a time that is no time in UTC (year 0)
        raise InvalidRequest(
            f"{field} must be an RFC 3339 time such as 2026-01-02T03:04:05Z, not {text[:64]!r}",
            field=field,
        ) from None


class Replays:
    def __init__(self, control: ControlPlane, queue: RouteSink, *, max_running: int) -> None:
        self._control = control
        self._queue = queue
        self._max_running = max_running

    async def start(self, principal: Principal, body: ReplayInput) -> Replay:
        new = await self._new_replay(principal, body)
        try:
            record = await self._control.replays.create(
                principal.tenant_id, new, max_running=self._max_running
            )
        except ConflictError as exc:
            raise Conflict(str(exc), code="ResourceAlreadyExists", field="name") from None
        return await self._view(principal.tenant, record)

    async def get(self, principal: Principal, name: str) -> Replay:
        record = await self._control.replays.get(principal.tenant_id, name)
        if record is None:
            raise NotFound.of(f"replay {name!r}")
        return await self._view(principal.tenant, record)

    async def all(self, principal: Principal, state: str | None) -> list[Replay]:
        if state is not None and state not in get_args(ReplayState):
            raise InvalidRequest(
                f"state must be one of {', '.join(get_args(ReplayState))}", field="state"
            )
        records = await self._control.replays.for_tenant(
            principal.tenant_id,
            state=state,  # type: ignore[arg-type]
        )
        return [await self._view(principal.tenant, r) for r in records]

    async def cancel(self, principal: Principal, name: str) -> Replay:
        record = await self._control.replays.cancel(principal.tenant_id, name)
        if record is None:
            raise NotFound.of(f"replay {name!r}")
        if record.state != "cancelled":
            raise Conflict(f"replay {name!r} has {record.state} already; it cannot be cancelled")
        return await self._view(principal.tenant, record)

    async def _view(self, tenant: TenantName, record: ReplayRecord) -> Replay:
        replayed = record.replayed
        if record.state in ("running", "cancelled"):
            # The control plane's count is written now and then (and not at all after a
            # cancel); the queue's cursor has the exact one.
            cursor = await self._queue.replay_cursor(tenant, record.name)
            replayed = max(replayed, cursor.replayed)
        return Replay(
            name=record.name,
            bus=record.bus,
            archive=record.archive,
            start=record.start,
            end=record.end,
            rules=record.rules,
            description=record.description,
            state=record.state,
            replayed=replayed,
            total=record.total,
            error=record.error,
            created_at=record.created_at,
            updated_at=record.updated_at,
            finished_at=record.finished_at,
        )

    async def _check_rules(self, tenant_id: TenantId, bus: str, names: list[str]) -> None:
        """Every named rule must be one of the bus's; say where a rule of another bus lives."""
        control = self._control
        for name in names:
            checked_name("rule", name, "rules")
            if await control.rules.get(tenant_id, bus, name) is not None:
                continue
            elsewhere = [
                other.name
                for other in await control.list_buses(tenant_id)
                if other.name != bus
                and await control.rules.get(tenant_id, other.name, name) is not None
            ]
            if elsewhere:
                raise InvalidRequest(
                    f"rule {name!r} is a rule of bus {elsewhere[0]!r}, not of bus {bus!r};"
                    " a replay goes to rules of the archive's bus only",
                    field="rules",
                )
            raise InvalidRequest(f"rule {name!r} does not exist on bus {bus!r}", field="rules")

    async def _new_replay(self, principal: Principal, body: ReplayInput) -> NewReplay:
        name = checked_name("replay", body.name, "name")
        bus = checked_name("bus", body.bus, "bus")
        archive_name = checked_name("archive", body.archive, "archive")
        start, end = _time(body, "start"), _time(body, "end")
        if end <= start:
            raise InvalidRequest(
                f"the window is empty or reversed: end {body.end} is not after start", field="end"
            )
        now = utc_now()
        if end > now:
            raise InvalidRequest(
                f"the window reaches into the future: end {body.end} is after now"
                f" ({now.isoformat(timespec='seconds')}); replays re-send events already recorded",
                field="end",
            )
        tenant_id = principal.tenant_id
        if await self._control.get_bus(tenant_id, bus) is None:
            raise InvalidRequest(f"bus {bus!r} does not exist", field="bus")
        archive = await self._control.archives.get(tenant_id, bus, archive_name)
        if archive is None:
            raise InvalidRequest(
                f"archive {archive_name!r} does not exist on bus {bus!r}", field="archive"
            )
        rules = None if body.rules is None else list(dict.fromkeys(body.rules))
        if rules is not None:
            await self._check_rules(tenant_id, bus, rules)
        return NewReplay(
            name=name,
            bus=bus,
            archive=archive_name,
            archive_uid=archive.uid,
            start=start,
            end=end,
            rules=rules,
            description=body.description,
        )
