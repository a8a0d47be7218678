"""Delivery history: `GET /v1/buses/{bus}/events/{id}` (what happened to an event),
`GET /v1/buses/{bus}/rules/{rule}/targets/{target}/attempts` (what a target was sent) and
`POST /v1/buses/{bus}/events/{id}/redeliver` (send an event again to its targets).

Both read the attempts the delivery workers recorded (`stellwerk.service.History`); a key sees
its own tenant's only, and another tenant's event id answers 404.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, path_name, query_int, query_time, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.openapi import Parameter
from stellwerk.api.routes.buses import bus_name
from stellwerk.api.routes.rules import rule_name
from stellwerk.auth import Scope
from stellwerk.events import Rfc3339
from stellwerk.service import (
    ATTEMPT_OUTCOMES,
    DEFAULT_ATTEMPT_PAGE,
    MAX_ATTEMPT_PAGE,
    AttemptOutcome,
    AttemptView,
    EventHistory,
    Redelivered,
)


class RedeliverInput(msgspec.Struct, forbid_unknown_fields=True):
    """Where to send the event again: one rule's targets (or its one `target`); without a rule,
    every target its delivery history names. `position` finds an event without history."""

    rule: str | None = None
    target: str | None = None
    position: Annotated[int, msgspec.Meta(ge=1)] | None = None


class AttemptPage(msgspec.Struct):
    attempts: list[AttemptView]
    next_after: int | None


async def event_history(request: Request) -> Response:
    return await history_of(request, request.path_params["id"])


async def history_of(request: Request, event_id: str) -> Response:
    """The event's history; the live tail hands over an event whose id is `stream`."""
    name = bus_name(request)
    found = await platform_of(request).history.event(principal_of(request.scope), name, event_id)
    return json_response(found)


async def redeliver(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, RedeliverInput, empty=RedeliverInput())
    found = await platform_of(request).history.redeliver(
        principal_of(request.scope),
        name,
        request.path_params["id"],
        position=body.position,
        rule=body.rule,
        target=body.target,
    )
    return json_response(found, status=202)


def wants_json(request: Request) -> bool:
    """Whether the request asks for JSON and not for server-sent events: what tells
    `GET /v1/buses/{bus}/events/stream` of the event `stream` from the live tail."""
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/event-stream" not in accept


async def target_attempts(request: Request) -> Response:
    name = bus_name(request)
    rule = rule_name(request)
    target = path_name(request, "target", "target")
    limit = query_int(request, "limit", DEFAULT_ATTEMPT_PAGE, 1, MAX_ATTEMPT_PAGE)
    found = await platform_of(request).history.attempts(
        principal_of(request.scope),
        name,
        rule,
        target,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        outcome=_outcome(request),
        after=query_int(request, "after", 0, 0, 2**62),
        limit=limit,
    )
    next_after = found[-1].id if len(found) == limit else None
    return json_response(AttemptPage(found, next_after))


def _outcome(request: Request) -> AttemptOutcome | None:
    text = request.query_params.get("outcome")
    if text is None:
        return None
    for outcome in ATTEMPT_OUTCOMES:
        if outcome == text:
            return outcome
    raise ApiError(
        400,
        "InvalidRequest",
        f"outcome must be one of {', '.join(ATTEMPT_OUTCOMES)}",
        field="outcome",
    )


_ERRORS: dict[int, type | None] = {
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    404: ErrorBody,
    501: ErrorBody,
}
_PAGE = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPT_PAGE)]
_AFTER = Annotated[int, msgspec.Meta(ge=0, le=2**62)]

ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/buses/{bus}/events/{id:path}/redeliver",
        redeliver,
        "Send a stored event again: to a rule's targets (or one target), or to every target"
        " its delivery history names",
        "delivery-history",
        Scope.ADMIN,
        request_body=RedeliverInput,
        request_body_required=False,
        responses={202: Redelivered, 415: ErrorBody, 422: ErrorBody, **_ERRORS},
        path_params={
            "bus": name_param("the bus name"),
            "id": Parameter("the event's id", Annotated[str, msgspec.Meta(min_length=1)]),
        },
    ),
    Endpoint(
        "get",
        "/v1/buses/{bus}/events/{id:path}",
        event_history,
        "An event, the rules it matched, and each target's delivery attempts and state",
        "delivery-history",
        Scope.READ,
        responses={200: EventHistory, **_ERRORS},
        path_params={
            "bus": name_param("the bus name"),
            "id": Parameter("the event's id", Annotated[str, msgspec.Meta(min_length=1)]),
        },
    ),
    Endpoint(
        "get",
        "/v1/buses/{bus}/rules/{rule}/targets/{target}/attempts",
        target_attempts,
        "A target's delivery attempts (filter: since, until, outcome; page: after)",
        "delivery-history",
        Scope.READ,
        responses={200: AttemptPage, **_ERRORS},
        path_params={
            "bus": name_param("the bus name"),
            "rule": name_param("the rule name"),
            "target": name_param("the target id"),
        },
        query_params={
            "since": Parameter("attempts started at or after this time", Rfc3339),
            "until": Parameter("attempts started before this time", Rfc3339),
            "outcome": Parameter("attempts that ended so", AttemptOutcome),
            "after": Parameter("the last id of the previous page", _AFTER),
            "limit": Parameter("attempts per page", _PAGE),
        },
    ),
]
