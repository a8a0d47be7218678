"""The dead-letter queue of a bus: `GET /v1/buses/{bus}/dead-letters` and redrive.

Dead letters are deliveries that failed for good: a 4xx other than 429, retries used up, the
event too old. Each shows the event it carried, the rule and target, the attempts and the last
error. Redriving moves them back to the queue with their attempts reset; their maximum event age
then counts from the redrive.
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
from stellwerk.seams import DeadLetter

MAX_PAGE = 1000


class DeadLetterView(msgspec.Struct):
    id: int
    rule: str
    target: str
    event_id: str
    event_source: str
    recorded_time: datetime
    dead_time: datetime
    attempts: int
    last_error: str | None
    content_type: str
    payload: Any


class DeadLetterPage(msgspec.Struct):
    dead_letters: list[DeadLetterView]
    next_after: int | None


class RedriveInput(msgspec.Struct, forbid_unknown_fields=True):
    """Which dead letters to send again: `ids`, or `all` of the bus."""

    ids: list[int] = msgspec.field(default_factory=list)
    all: bool = False


class RedriveResult(msgspec.Struct):
    redriven: int


def _payload(letter: DeadLetter) -> Any:
    if letter.content_type == "text/plain":
        return letter.payload.decode(errors="replace")
    try:
        return msgspec.json.decode(letter.payload)
    except msgspec.DecodeError:
        return letter.payload.decode(errors="replace")


def _view(letter: DeadLetter) -> DeadLetterView:
    return DeadLetterView(
        id=letter.id,
        rule=letter.rule,
        target=letter.target_id,
        event_id=letter.event_id,
        event_source=letter.event_source,
        recorded_time=letter.recorded_time,
        dead_time=letter.dead_time,
        attempts=letter.attempts,
        last_error=letter.last_error,
        content_type=letter.content_type,
        payload=_payload(letter),
    )


async def list_dead_letters(request: Request) -> Response:
    name = bus_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    if await services.control.get_bus(principal.tenant_id, name) is None:
        raise not_found(f"bus {name!r}")
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    letters = await services.queue.dead_letters(
        principal.tenant,
        name,
        rule=request.query_params.get("rule"),
        target_id=request.query_params.get("target"),
        after=query_int(request, "after", 0, 0, 2**62),
        limit=limit,
    )
    next_after = letters[-1].id if len(letters) == limit else None
    return json_response(DeadLetterPage([_view(d) for d in letters], next_after))


async def redrive(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, RedriveInput)
    if not body.all and not body.ids:
        raise ApiError(422, "ValidationFailed", "give ids or all: true", field="$.ids")
    services = services_of(request)
    principal = principal_of(request.scope)
    if await services.control.get_bus(principal.tenant_id, name) is None:
        raise not_found(f"bus {name!r}")
    moved = await services.queue.redrive(principal.tenant, name, None if body.all else body.ids)
    services.worker.notify()
    return json_response(RedriveResult(moved))


_BUS = {"bus": "the bus name"}
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
        request_body=RedriveInput,
        responses={200: RedriveResult, 422: ErrorBody, **_ERRORS},
        path_params=_BUS,
    ),
]
