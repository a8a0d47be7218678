"""The failed-events store of a bus: list (filtered), re-submit after a fix, or discard.

`GET /v1/buses/{bus}/failed-events?type=&id=&since=&until=&after=&limit=&include_resubmitted=`
pages by `after` (the last `id` seen; `next_after` says where to go on). Re-submitting checks each
event against the schema as it is now: events that pass are put on the bus (keeping their id, so a
re-submission twice is stored once) and marked re-submitted; the rest stay with their new errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, query_int, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.events import EventError, parse_rfc3339, validate_event
from stellwerk.schemas import compile_schema, event_violations
from stellwerk.seams import LogOverloaded, NewEvent
from stellwerk.storage.control import FailedEventFilter, FailedEventRecord

MAX_PAGE = 500


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


class FailedEventPage(msgspec.Struct):
    failed_events: list[FailedEventView]
    next_after: int | None


class ResubmitInput(msgspec.Struct, forbid_unknown_fields=True):
    """Which failed events to re-submit: `ids`, or `all` (up to 1,000 per call)."""

    ids: list[int] = msgspec.field(default_factory=list)
    all: bool = False


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


def _query_time(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise ApiError(
            400, "InvalidRequest", f"{name} must be an RFC 3339 time", field=name
        ) from None


async def list_failed(request: Request) -> Response:
    name = bus_name(request)
    services = services_of(request)
    tenant_id = principal_of(request.scope).tenant_id
    if await services.control.get_bus(tenant_id, name) is None:
        raise not_found(f"bus {name!r}")
    params = request.query_params
    where = FailedEventFilter(
        type=params.get("type"),
        event_id=params.get("id"),
        since=_query_time(request, "since"),
        until=_query_time(request, "until"),
        include_resubmitted=params.get("include_resubmitted", "false").lower() == "true",
    )
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    records = await services.control.failed_events.find(
        tenant_id, name, where, after=query_int(request, "after", 0, 0, 2**62), limit=limit
    )
    next_after = records[-1].id if len(records) == limit else None
    return json_response(FailedEventPage([_view(r) for r in records], next_after))


async def resubmit(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, ResubmitInput)
    if not body.all and not body.ids:
        raise ApiError(422, "ValidationFailed", "give ids or all: true", field="$.ids")
    services = services_of(request)
    principal = principal_of(request.scope)
    control = services.control
    bus = await control.get_bus(principal.tenant_id, name)
    if bus is None:
        raise not_found(f"bus {name!r}")
    if body.all:
        records = await control.failed_events.find(
            principal.tenant_id, name, FailedEventFilter(), limit=1000
        )
    else:
        records = await control.failed_events.get(principal.tenant_id, name, body.ids[:1000])
        missing = set(body.ids) - {r.id for r in records}
        if missing:
            raise not_found(f"failed events {sorted(missing)}")

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
        passing.append(
            (
                record,
                NewEvent(
                    tenant=principal.tenant,
                    bus=name,
                    id=event.id,
                    source=event.source,
                    type=event.type,
                    subject=event.subject,
                    body=record.body,
                ),
            )
        )
    if passing:
        try:
            await services.event_log.append([new for _, new in passing])
        except LogOverloaded as exc:
            raise ApiError(
                503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}
            ) from None
        services.log_watch.appended(principal.tenant, name)
        await control.failed_events.mark_resubmitted(
            principal.tenant_id, [record.id for record, _ in passing]
        )
        outcomes.extend(ResubmitOutcome(record.id, True) for record, _ in passing)
    outcomes.sort(key=lambda o: o.id)
    done = sum(1 for o in outcomes if o.resubmitted)
    return json_response(ResubmitResult(done, len(outcomes) - done, outcomes))


async def discard(request: Request) -> Response:
    name = bus_name(request)
    raw: str = request.path_params["id"]
    if not raw.isdigit():
        raise ApiError(400, "InvalidRequest", "the failed event id is a number", field="id")
    tenant_id = principal_of(request.scope).tenant_id
    if not await services_of(request).control.failed_events.delete(tenant_id, name, int(raw)):
        raise not_found(f"failed event {raw}")
    return Response(status_code=204)


_BUS = {"bus": "the bus name"}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/failed-events",
        list_failed,
        "Events the bus refused, with reasons (filter: type, id, since, until; page: after)",
        "failed-events",
        Scope.READ,
        responses={200: FailedEventPage, **_ERRORS},
        path_params=_BUS,
    ),
    Endpoint(
        "post",
        "/v1/buses/{bus}/failed-events/resubmit",
        resubmit,
        "Re-submit failed events to their bus after a fix",
        "failed-events",
        Scope.ADMIN,
        request_body=ResubmitInput,
        responses={200: ResubmitResult, 422: ErrorBody, 503: ErrorBody, **_ERRORS},
        path_params=_BUS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/failed-events/{id}",
        discard,
        "Discard a failed event",
        "failed-events",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params={**_BUS, "id": "the failed event's id"},
    ),
]
