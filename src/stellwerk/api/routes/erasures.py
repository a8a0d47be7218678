"""Erasures: `POST /v1/erasures`, `GET /v1/erasures[/{id}]` (admin keys only).

An erasure deletes a person's data: every event of the tenant (or of one bus) with a `subject`,
or with a `value` at a `field` path, from the log, the archives, the failed-events store and the
delivery queue (see docs/erasure.md). The request is checked whole and recorded as an audit entry
(who asked, when, for what) before anything is erased; the work runs in the background and the
entry shows its state and the counts per store. The audit entry holds the criterion, so it is
shown to admin keys only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, query_int, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.auth import Scope
from stellwerk.erasure.criterion import Criterion, InvalidCriterion, parse
from stellwerk.names import InvalidNameError, check_name
from stellwerk.storage.control import ErasureRecord, ErasureState

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
    bus: str | None = None
    suppress: bool = False


class Erasure(msgspec.Struct):
    """An erasure's audit entry. `state` is `running`, then `completed` or `failed` (`error`);
    `counts` has the events erased per store so far: `log`, `archives`, `failed_events`,
    `deliveries` (still on their way) and `dead_letters`."""

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


class ErasureList(msgspec.Struct):
    erasures: list[Erasure]
    next_before: str | None


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


async def request_erasure(request: Request) -> Response:
    body = await read_json(request, ErasureInput)
    try:
        criterion = parse(body.subject, body.field, body.value)
    except InvalidCriterion as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field=exc.field) from None
    services = services_of(request)
    principal = principal_of(request.scope)
    if body.bus is not None:
        try:
            check_name("bus", body.bus)
        except InvalidNameError as exc:
            raise ApiError(400, "InvalidRequest", str(exc), field="bus") from None
        if await services.control.get_bus(principal.tenant_id, body.bus) is None:
            raise not_found(f"bus {body.bus!r}")
    record = await services.erasures.request(
        principal.tenant_id,
        principal.tenant,
        bus=body.bus,
        criterion=criterion,
        suppress=body.suppress,
        requested_by=principal.key_id,
    )
    return json_response(_view(record), 202, headers={"Location": f"/v1/erasures/{record.id}"})


async def get_erasure(request: Request) -> Response:
    erasure_id: str = request.path_params["id"]
    principal = principal_of(request.scope)
    record = await services_of(request).control.erasures.get(principal.tenant_id, erasure_id)
    if record is None:
        raise not_found(f"erasure {erasure_id!r}")
    return json_response(_view(record))


async def list_erasures(request: Request) -> Response:
    principal = principal_of(request.scope)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    records = await services_of(request).control.erasures.recent(
        principal.tenant_id, before=request.query_params.get("before"), limit=limit
    )
    next_before = records[-1].id if len(records) == limit else None
    return json_response(ErasureList([_view(r) for r in records], next_before))


_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/erasures",
        request_erasure,
        "Erase a person's data: events with a subject, or with a value at a field path",
        "erasures",
        Scope.ADMIN,
        request_body=ErasureInput,
        responses={202: Erasure, 404: ErrorBody, 415: ErrorBody, 422: ErrorBody, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/erasures",
        list_erasures,
        "The tenant's erasures, newest first (page: before, limit)",
        "erasures",
        Scope.ADMIN,
        responses={200: ErasureList, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/erasures/{id}",
        get_erasure,
        "An erasure's audit entry: state and counts per store",
        "erasures",
        Scope.ADMIN,
        responses={200: Erasure, 404: ErrorBody, **_ERRORS},
        path_params={"id": "the erasure's id"},
    ),
]
