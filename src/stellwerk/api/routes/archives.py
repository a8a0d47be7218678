"""Archives of a bus: `PUT|GET|DELETE /v1/buses/{bus}/archives/{name}`, `GET .../archives`.

An archive keeps copies of the bus's events that match its pattern (all of them without one),
recorded from its creation on, for `retention_days` (0: forever). Its definition is saved with
the archiver of this process paused, and the answer waits until the archiver that follows the
bus (here or in another process) has taken it in, so every event recorded after the answer is
archived; after `TAKE_SECONDS` without one it answers with the state `creating`. Deleting an
archive drops its copies. See docs/archives.md.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Principal, Scope
from stellwerk.names import NAME_RULE, InvalidNameError, check_name
from stellwerk.patterns import InvalidPatternError, compile_pattern
from stellwerk.seams import ArchiveStats, Change
from stellwerk.services import Services
from stellwerk.storage.control import ArchiveRecord, ConflictError

MAX_ARCHIVES_PER_BUS: Final = 20
MAX_RETENTION_DAYS: Final = 36_500
TAKE_SECONDS: Final = 5.0  # how long a PUT waits for an archiver to take the archive in
TAKE_POLL_SECONDS: Final = 0.02
TAKE_SIGNAL_SECONDS: Final = 1.0  # the signal is at most once: say it again while waiting


ArchiveState = Literal["enabled", "catching_up", "creating"]


class ArchiveInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/buses/{bus}/archives/{name}`; no pattern: every event of the bus."""

    pattern: dict[str, Any] | None = None
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETENTION_DAYS)] = 0
    description: Annotated[str, msgspec.Meta(max_length=512)] = ""


class Archive(msgspec.Struct):
    """An archive as the API shows it.

    `events` and `size_bytes` count what it holds now. `state` is `creating` until the archiver
    of the bus has taken the archive in, then `catching_up` while that archiver has not yet
    looked at every event of the bus, and `enabled` once it has.
    """

    name: str
    bus: str
    pattern: dict[str, Any] | None
    retention_days: int
    description: str
    state: ArchiveState
    events: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime


class ArchiveList(msgspec.Struct):
    archives: list[Archive]


def archive_name(request: Request) -> str:
    name: str = request.path_params["name"]
    try:
        return check_name("archive", name)
    except InvalidNameError as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field="name") from None


async def _bus_or_404(services: Services, tenant_id: str, name: str) -> None:
    if await services.control.get_bus(tenant_id, name) is None:
        raise not_found(f"bus {name!r}")


async def _shown(
    services: Services, principal: Principal, records: list[ArchiveRecord]
) -> list[Archive]:
    if not records:
        return []
    bus = records[0].bus
    stats = await services.archive_store.stats([r.uid for r in records])
    done = await services.archive_store.cursor(principal.tenant, bus)
    last = await services.event_log.last_position(principal.tenant, bus)
    out = []
    for record in records:
        held = stats.get(record.uid, ArchiveStats(0, 0))
        caught_up = max(done, record.start_position) >= last
        state: ArchiveState = (
            "creating" if not record.taken else "enabled" if caught_up else "catching_up"
        )
        out.append(
            Archive(
                name=record.name,
                bus=record.bus,
                pattern=record.pattern,
                retention_days=record.retention_days,
                description=record.description,
                state=state,
                events=held.events,
                size_bytes=held.bytes,
                created_at=record.created_at,
                updated_at=record.updated_at,
            )
        )
    return out


async def put_archive(request: Request) -> Response:
    bus = bus_name(request)
    name = archive_name(request)
    body = await read_json(request, ArchiveInput, empty=ArchiveInput())
    services = services_of(request)
    principal = principal_of(request.scope)
    await _bus_or_404(services, principal.tenant_id, bus)
    if body.pattern is not None:
        try:
            compile_pattern(body.pattern)
        except InvalidPatternError as exc:
            raise ApiError(400, "InvalidEventPatternException", str(exc), field="pattern") from None
    # Paused, the archiver cannot pass the start read here before it knows the archive.
    async with services.archiver.paused():
        start = await services.event_log.last_position(principal.tenant, bus)
        try:
            record, created = await services.control.archives.put(
                principal.tenant_id,
                bus,
                name,
                pattern=body.pattern,
                retention_days=body.retention_days,
                description=body.description,
                start_position=start,
                max_archives=MAX_ARCHIVES_PER_BUS,
            )
        except ConflictError as exc:
            raise ApiError(409, "LimitExceeded", str(exc)) from None
    # Archivers in other processes (the router role) take it in when told.
    change = Change("archive", principal.tenant_id, bus)
    await services.signals.changed(change)
    record = await _taken_in(services, principal, record, change)
    (shown,) = await _shown(services, principal, [record])
    return json_response(shown, 201 if created else 200)


async def _taken_in(
    services: Services, principal: Principal, record: ArchiveRecord, change: Change
) -> ArchiveRecord:
    """The archive once the archiver of its bus has taken it in, or after `TAKE_SECONDS`."""
    await services.archiver.take_in(principal.tenant, record.bus)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TAKE_SECONDS
    next_signal = loop.time() + TAKE_SIGNAL_SECONDS
    while True:
        current = await services.control.archives.get(record.tenant_id, record.bus, record.name)
        if current is None or current.uid != record.uid:
            raise ApiError(409, "ConcurrentModificationException", "the archive was deleted")
        if current.taken or loop.time() >= deadline:
            return current
        if loop.time() >= next_signal:
            await services.signals.changed(change)
            next_signal = loop.time() + TAKE_SIGNAL_SECONDS
        await asyncio.sleep(TAKE_POLL_SECONDS)


async def get_archive(request: Request) -> Response:
    bus = bus_name(request)
    name = archive_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    record = await services.control.archives.get(principal.tenant_id, bus, name)
    if record is None:
        raise not_found(f"archive {name!r} on bus {bus!r}")
    (shown,) = await _shown(services, principal, [record])
    return json_response(shown)


async def list_archives(request: Request) -> Response:
    bus = bus_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    await _bus_or_404(services, principal.tenant_id, bus)
    records = await services.control.archives.for_bus(principal.tenant_id, bus)
    return json_response(ArchiveList(archives=await _shown(services, principal, records)))


async def delete_archive(request: Request) -> Response:
    bus = bus_name(request)
    name = archive_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    async with services.archiver.paused():
        record = await services.control.archives.delete(principal.tenant_id, bus, name)
    if record is None:
        raise not_found(f"archive {name!r} on bus {bus!r}")
    await services.signals.changed(Change("archive", principal.tenant_id, bus))
    # The archiver has let go of it (reloaded on leaving the pause), so nothing is added after.
    # An archiver in another process may still add a batch before it hears: it drops the
    # archive's copies itself when it reloads (`Archiver._reload`).
    await services.archive_store.drop(record.uid)
    return Response(status_code=204)


_PARAMS = {"bus": "the bus name", "name": f"the archive name, {NAME_RULE}"}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/archives",
        list_archives,
        "List the archives of a bus, with their event counts and sizes",
        "archives",
        Scope.READ,
        responses={200: ArchiveList, **_ERRORS},
        path_params={"bus": "the bus name"},
    ),
    Endpoint(
        "put",
        "/v1/buses/{bus}/archives/{name}",
        put_archive,
        f"Create or update an archive (pattern, retention; up to {MAX_ARCHIVES_PER_BUS} per bus)",
        "archives",
        Scope.ADMIN,
        request_body=ArchiveInput,
        responses={200: Archive, 201: Archive, 409: ErrorBody, 422: ErrorBody, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "get",
        "/v1/buses/{bus}/archives/{name}",
        get_archive,
        "Describe an archive: pattern, retention, state, events and bytes held",
        "archives",
        Scope.READ,
        responses={200: Archive, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/archives/{name}",
        delete_archive,
        "Delete an archive and the events it holds",
        "archives",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params=_PARAMS,
    ),
]
