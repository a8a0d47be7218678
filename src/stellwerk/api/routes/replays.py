"""Replays: `POST /v1/replays`, `GET /v1/replays[/{name}]`, `DELETE /v1/replays/{name}` (cancel).

A replay re-sends the events an archive holds from a time window `[start, end)` to the rules of
the archive's bus (all of them, or those named). Everything about the request is checked before
the replay is recorded, so that a replay that starts can run: the window must be in the past and
not empty, the archive must be the bus's, and every rule named must be one of the bus's rules.
A name is used once per tenant, for good: its cursor stays with it.

The runner (`routing.replay`) does the work in the background; `GET` shows its state and
progress, `replayed` counted exactly from the queue's cursor while the replay runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, get_args

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.auth import Principal, Scope
from stellwerk.clock import utc_now
from stellwerk.events import parse_rfc3339
from stellwerk.names import NAME_RULE, InvalidNameError, check_name
from stellwerk.seams import Change
from stellwerk.services import Services
from stellwerk.storage.control import ConflictError, NewReplay, ReplayRecord, ReplayState

MAX_RULES: Final = 300
MAX_DESCRIPTION: Final = 512


class ReplayInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/replays`. `start` and `end` are RFC 3339; `end` is exclusive."""

    name: str
    archive: str
    bus: str
    start: str
    end: str
    rules: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_RULES)] | None = None
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


class ReplayList(msgspec.Struct):
    replays: list[Replay]


def _invalid(message: str, field: str) -> ApiError:
    return ApiError(400, "InvalidRequest", message, field=field)


def _name(kind: str, value: str, field: str) -> str:
    try:
        return check_name(kind, value)
    except InvalidNameError as exc:
        raise _invalid(str(exc), field) from None


def _time(body: ReplayInput, field: str) -> datetime:
    text: str = getattr(body, field)
    try:
        return parse_rfc3339(text).astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: a time that is no time in UTC (year 0)
        raise _invalid(
            f"{field} must be an RFC 3339 time such as 2026-01-02T03:04:05Z, not {text[:64]!r}",
            field,
        ) from None


async def _view(services: Services, tenant: str, record: ReplayRecord) -> Replay:
    replayed = record.replayed
    if record.state in ("running", "cancelled"):
        # The control plane's count is written now and then (and not at all after a cancel);
        # the queue's cursor has the exact one.
        replayed = max(replayed, (await services.queue.replay_cursor(tenant, record.name)).replayed)
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


async def _check_rules(services: Services, tenant_id: str, bus: str, names: list[str]) -> None:
    """Every named rule must be one of the bus's; say where a rule of another bus lives."""
    for name in names:
        _name("rule", name, "rules")
        if await services.control.rules.get(tenant_id, bus, name) is not None:
            continue
        elsewhere = [
            other.name
            for other in await services.control.list_buses(tenant_id)
            if other.name != bus
            and await services.control.rules.get(tenant_id, other.name, name) is not None
        ]
        if elsewhere:
            raise _invalid(
                f"rule {name!r} is a rule of bus {elsewhere[0]!r}, not of bus {bus!r};"
                " a replay goes to rules of the archive's bus only",
                "rules",
            )
        raise _invalid(f"rule {name!r} does not exist on bus {bus!r}", "rules")


async def _new_replay(services: Services, principal: Principal, body: ReplayInput) -> NewReplay:
    name = _name("replay", body.name, "name")
    bus = _name("bus", body.bus, "bus")
    archive_name = _name("archive", body.archive, "archive")
    start, end = _time(body, "start"), _time(body, "end")
    if end <= start:
        raise _invalid(f"the window is empty or reversed: end {body.end} is not after start", "end")
    now = utc_now()
    if end > now:
        raise _invalid(
            f"the window reaches into the future: end {body.end} is after now"
            f" ({now.isoformat(timespec='seconds')}); replays re-send events already recorded",
            "end",
        )
    tenant_id = principal.tenant_id
    if await services.control.get_bus(tenant_id, bus) is None:
        raise _invalid(f"bus {bus!r} does not exist", "bus")
    archive = await services.control.archives.get(tenant_id, bus, archive_name)
    if archive is None:
        raise _invalid(f"archive {archive_name!r} does not exist on bus {bus!r}", "archive")
    rules = None if body.rules is None else list(dict.fromkeys(body.rules))
    if rules is not None:
        await _check_rules(services, tenant_id, bus, rules)
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


async def start_replay(request: Request) -> Response:
    body = await read_json(request, ReplayInput)
    services = services_of(request)
    principal = principal_of(request.scope)
    new = await _new_replay(services, principal, body)
    try:
        record = await services.control.replays.create(
            principal.tenant_id, new, max_running=services.settings.max_concurrent_replays
        )
    except ConflictError as exc:
        raise ApiError(409, "ResourceAlreadyExists", str(exc), field="name") from None
    await services.changed(Change("replay", principal.tenant_id))
    return json_response(await _view(services, principal.tenant, record), 201)


def _path_name(request: Request) -> str:
    name: str = request.path_params["name"]
    try:
        return check_name("replay", name)
    except InvalidNameError as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field="name") from None


async def get_replay(request: Request) -> Response:
    name = _path_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    record = await services.control.replays.get(principal.tenant_id, name)
    if record is None:
        raise not_found(f"replay {name!r}")
    return json_response(await _view(services, principal.tenant, record))


async def list_replays(request: Request) -> Response:
    services = services_of(request)
    principal = principal_of(request.scope)
    state = request.query_params.get("state")
    if state is not None and state not in get_args(ReplayState):
        raise ApiError(
            400,
            "InvalidRequest",
            f"state must be one of {', '.join(get_args(ReplayState))}",
            field="state",
        )
    records = await services.control.replays.for_tenant(
        principal.tenant_id,
        state=state,  # type: ignore[arg-type]
    )
    views = [await _view(services, principal.tenant, r) for r in records]
    return json_response(ReplayList(views))


async def cancel_replay(request: Request) -> Response:
    name = _path_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    record = await services.control.replays.cancel(principal.tenant_id, name)
    if record is None:
        raise not_found(f"replay {name!r}")
    if record.state != "cancelled":
        raise ApiError(
            409, "Conflict", f"replay {name!r} has {record.state} already; it cannot be cancelled"
        )
    await services.changed(Change("replay_cancelled", principal.tenant_id, name=name))
    return json_response(await _view(services, principal.tenant, record))


_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}
_NAME = {"name": f"the replay name, {NAME_RULE}"}

ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/replays",
        start_replay,
        "Replay a time window of an archive to the rules of its bus (all, or those named)",
        "replays",
        Scope.ADMIN,
        request_body=ReplayInput,
        responses={201: Replay, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/replays",
        list_replays,
        "List the tenant's replays, newest first (filter: state)",
        "replays",
        Scope.READ,
        responses={200: ReplayList, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/replays/{name}",
        get_replay,
        "A replay's state and progress (replayed of total)",
        "replays",
        Scope.READ,
        responses={200: Replay, 404: ErrorBody, **_ERRORS},
        path_params=_NAME,
    ),
    Endpoint(
        "delete",
        "/v1/replays/{name}",
        cancel_replay,
        "Cancel a queued or running replay (deliveries already queued still go out)",
        "replays",
        Scope.ADMIN,
        responses={200: Replay, 404: ErrorBody, 409: ErrorBody, **_ERRORS},
        path_params=_NAME,
    ),
]
