"""`POST /v1/test-event-pattern`: does this event match this pattern, and if not, why not."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.auth import Scope
from stellwerk.patterns import InvalidPatternError, explain


class PatternTest(msgspec.Struct, forbid_unknown_fields=True):
    """`pattern` is an EventBridge event pattern (object or its JSON text); `event` any JSON."""

    event: dict[str, Any]
    pattern: dict[str, Any] | str


class PatternTestResult(msgspec.Struct):
    """`explanation` lists, per `$or` alternative, each field that did not match and why."""

    result: bool
    explanation: dict[str, Any]
    message: str


async def test_event_pattern(request: Request) -> Response:
    body = await read_json(request, PatternTest)
    try:
        explanation = explain(body.pattern, body.event)
    except InvalidPatternError as exc:
        raise ApiError(400, "InvalidEventPatternException", str(exc)) from None
    return json_response(
        PatternTestResult(
            result=explanation.matched, explanation=explanation.to_dict(), message=str(explanation)
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
