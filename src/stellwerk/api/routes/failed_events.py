"""The failed-events store of a bus: list (filtered), re-submit after a fix, or discard.

`GET /v1/buses/{bus}/failed-events?type=&id=&since=&until=&after=&limit=&include_resubmitted=`
pages by `after` (the last `id` seen; `next_after` says where to go on). What re-submitting
checks is the service layer's (`stellwerk.service.FailedEvents`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import (
    IDS_OR_ALL,
    RowId,
    json_response,
    query_int,
    query_time,
    read_json,
)
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.openapi import Parameter
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.service import FailedEventFilter, FailedEventView, NotFound, ResubmitResult

MAX_PAGE = 500


class FailedEventPage(msgspec.Struct):
    failed_events: list[FailedEventView]
    next_after: int | None


class ResubmitInput(msgspec.Struct, forbid_unknown_fields=True):
    """Which failed events to re-submit: `ids`, or `all` (up to 1,000 per call)."""

    ids: list[RowId] = msgspec.field(default_factory=list)
    all: bool = False


async def list_failed(request: Request) -> Response:
    name = bus_name(request)
    params = request.query_params
    principal = principal_of(request.scope)
    platform = platform_of(request)
    await platform.buses.record(principal.tenant_id, name)  # 404 before a bad query's 400
    where = FailedEventFilter(
        type=params.get("type"),
        event_id=params.get("id"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
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
    # The route takes digits only (`{id:int}`), so that `DELETE .../failed-events/resubmit` is
    # the 405 of the resubmit route rather than a failed event named "resubmit".
    failed_id: int = request.path_params["id"]
    if failed_id > 2**63 - 1:
        # A larger number names nothing, and would not fit the stores' 64-bit integers.
        raise NotFound.of(f"failed event {failed_id}")
    await platform_of(request).failed_events.discard(principal_of(request.scope), name, failed_id)
    return Response(status_code=204)


_BUS = {"bus": name_param("the bus name")}
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
        request_body=Annotated[ResubmitInput, IDS_OR_ALL],
        responses={200: ResubmitResult, 422: ErrorBody, 503: ErrorBody, **_ERRORS},
        path_params=_BUS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/failed-events/{id:int}",
        discard,
        "Discard a failed event",
        "failed-events",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params={
            **_BUS,
            "id": Parameter("the failed event's id", RowId),
        },
    ),
]
