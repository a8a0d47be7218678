"""Ingest: `POST /v1/buses/{bus}/events` in every mode of the CloudEvents HTTP binding.

The answer is 202 only after every accepted event is durable in the log (see
`stellwerk.service.Ingest`). `IngestFastPath` usually answers before this route is reached,
with the same pipeline of checks.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.ingest import BATCH_CONTENT_TYPE, JSON_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE
from stellwerk.service import IngestResult


class CloudEventBody(msgspec.Struct):
    """A CloudEvent (structured mode), or an array of them (batch and plain JSON)."""

    id: str
    source: str
    type: str
    specversion: str = "1.0"
    time: str | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    data: Any = None


async def put_events(request: Request) -> Response:
    name = bus_name(request)
    content = await platform_of(request).ingest.put(
        principal_of(request.scope),
        name,
        request.headers.get("content-type"),
        request.headers,
        request.body,
    )
    return Response(content, status_code=202, media_type="application/json")


ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/buses/{bus}/events",
        put_events,
        "Send events (CloudEvents HTTP binding: structured, binary, batch, or plain JSON)",
        "events",
        Scope.INGEST,
        request_body=CloudEventBody,
        request_content_types=(STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE, JSON_CONTENT_TYPE),
        responses={
            202: IngestResult,
            400: ErrorBody,
            401: ErrorBody,
            403: ErrorBody,
            404: ErrorBody,
            413: ErrorBody,
            415: ErrorBody,
            429: ErrorBody,
            503: ErrorBody,
        },
        path_params={"bus": "the bus name"},
    ),
]
