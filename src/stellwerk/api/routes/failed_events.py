"""The failed-events store of a bus: list (filtered), re-submit after a fix, or discard.

`GET /v1/buses/{bus}/failed-events?type=&id=&since=&until=&after=&limit=&include_resubmitted=`
pages by `after` (the last `id` seen; `next_after` says where to go on). What re-submitting
checks is the service layer's (`stellwerk.service.FailedEvents`).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, query_int, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.events import parse_rfc3339
from stellwerk.service import FailedEventFilter, FailedEventView, ResubmitResult

MAX_PAGE = 500


class FailedEventPage(msgspec.Struct):
    failed_events: list[FailedEventView]
    next_after: int | None


class ResubmitInput(msgspec.Struct, forbid_unknown_fields=True):
    """Which failed events to re-submit: `ids`, or `all` (up to 1,000 per call)."""

    ids: list[int] = msgspec.field(default_factory=list)
    all: bool = False


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
    params = request.query_params
    principal = principal_of(request.scope)
    platform = platform_of(request)
    await platform.buses.record(principal.tenant_id, name)  # 404 before a bad query's 400
    where = FailedEventFilter(
        type=params.get("type"),
        event_id=params.get("id"),
        since=_query_time(request, "since"),
        until=_query_time(request, "until"),
        include_resubmitted=params.get("include_resubmitted", "false").lower() == "true",
    )
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    found = await platform.failed_events.find(
        principal, name, where, after=query_int(request, "after", 0, 0, 2**62), limit=limit
    )
    next_after = found[-1].id if len(found) == limit else None
    return json_response(FailedEventPage(found, next_after))


async def resubmit(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, ResubmitInput)
    if not body.all and not body.ids:
        raise ApiError(422, "ValidationFailed", "give ids or all: true", field="$.ids")
    result: ResubmitResult = await platform_of(request).failed_events.resubmit(
        principal_of(request.scope), name, None if body.all else body.ids
    )
    return json_response(result)


async def discard(request: Request) -> Response:
    name = bus_name(request)
    raw: str = request.path_params["id"]
    if not raw.isdigit():
        raise ApiError(400, "InvalidRequest", "the failed event id is a number", field="id")
    await platform_of(request).failed_events.discard(principal_of(request.scope), name, int(raw))
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
