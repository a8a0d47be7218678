"""The dead-letter queue of a bus: `GET /v1/buses/{bus}/dead-letters` and redrive.

Each dead letter shows the event it carried, the rule and target, the attempts and the last
error (see `stellwerk.service.DeadLetters`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import IDS_OR_ALL, RowId, json_response, query_int, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.service import DeadLetterView

MAX_PAGE = 1000


class DeadLetterPage(msgspec.Struct):
    dead_letters: list[DeadLetterView]
    next_after: int | None


class RedriveInput(msgspec.Struct, forbid_unknown_fields=True):
    """Which dead letters to send again: `ids`, or `all` of the bus."""

    ids: list[RowId] = msgspec.field(default_factory=list)
    all: bool = False


class RedriveResult(msgspec.Struct):
    redriven: int


async def list_dead_letters(request: Request) -> Response:
    name = bus_name(request)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    letters = await platform_of(request).dead_letters.all(
        principal_of(request.scope),
        name,
        rule=request.query_params.get("rule"),
        target=request.query_params.get("target"),
        after=query_int(request, "after", 0, 0, 2**62),
        limit=limit,
    )
    next_after = letters[-1].id if len(letters) == limit else None
    return json_response(DeadLetterPage(letters, next_after))


async def redrive(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, RedriveInput)
    if not body.all and not body.ids:
        raise ApiError(422, "ValidationFailed", "give ids or all: true", field="$.ids")
    moved = await platform_of(request).dead_letters.redrive(
        principal_of(request.scope), name, None if body.all else body.ids
    )
    return json_response(RedriveResult(moved))


_BUS = {"bus": name_param("the bus name")}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/dead-letters",
        list_dead_letters,
        "Deliveries that failed for good, with the last error (filter: rule, target; page: after)",
        "dead-letters",
        Scope.READ,
        responses={200: DeadLetterPage, **_ERRORS},
        path_params=_BUS,
    ),
    Endpoint(
        "post",
        "/v1/buses/{bus}/dead-letters/redrive",
        redrive,
        "Send dead letters again (ids, or all)",
        "dead-letters",
        Scope.ADMIN,
        request_body=Annotated[RedriveInput, IDS_OR_ALL],
        responses={200: RedriveResult, 422: ErrorBody, **_ERRORS},
        path_params=_BUS,
    ),
]
