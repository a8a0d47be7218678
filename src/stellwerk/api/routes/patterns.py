"""`POST /v1/test-event-pattern`: does this event match this pattern, and if not, why not; as a
rule with either view sees the event (the CloudEvent as stored, or EventBridge's envelope)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.auth import Scope
from stellwerk.events.envelope import eventbridge_envelope
from stellwerk.patterns import InvalidPatternError, PatternObject, explain


class PatternTest(msgspec.Struct, forbid_unknown_fields=True):
    """`pattern` is an EventBridge event pattern (object or its JSON text); `event` any JSON.

    `view` is the rule's: `cloudevents` matches `event` as it is; `eventbridge` (the rules
    made through the EventBridge API) takes `event` as a stored CloudEvent and matches its
    EventBridge envelope, with the caller's tenant as the account."""

    event: dict[str, Any]
    pattern: PatternObject | str
    view: Literal["cloudevents", "eventbridge"] = "cloudevents"


class PatternTestResult(msgspec.Struct):
    """`explanation` lists, per `$or` alternative, each field that did not match and why, by
    its path in what the pattern saw: `envelope` with view `eventbridge`, else `event`."""

    result: bool
    explanation: dict[str, Any]
    message: str
    envelope: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


async def test_event_pattern(request: Request) -> Response:
    body = await read_json(request, PatternTest)
    envelope: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    seen = body.event
    if body.view == "eventbridge":
        seen = envelope = eventbridge_envelope(body.event, principal_of(request.scope).tenant)
    try:
        explanation = explain(body.pattern, seen)
    except InvalidPatternError as exc:
        raise ApiError(400, "InvalidEventPatternException", str(exc)) from None
    return json_response(
        PatternTestResult(
            result=explanation.matched,
            explanation=explanation.to_dict(),
            message=str(explanation),
            envelope=envelope,
        )
    )


ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/test-event-pattern",
        test_event_pattern,
        "Test an event against a pattern, with an explanation when it does not match",
        "patterns",
        Scope.READ,
        request_body=PatternTest,
        responses={
            200: PatternTestResult,
            400: ErrorBody,
            401: ErrorBody,
            403: ErrorBody,
            422: ErrorBody,
        },
    ),
]
