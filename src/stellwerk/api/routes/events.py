"""Ingest: `POST /v1/buses/{bus}/events` in every mode of the CloudEvents HTTP binding.

The answer is 202 only after every accepted event is durable in the log (see
`stellwerk.service.Ingest`). `IngestFastPath` usually answers before this route is reached,
with the same pipeline of checks.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.events import CLOUD_EVENT_SCHEMA
from stellwerk.ingest import (
    BATCH_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    BindingLimits,
)
from stellwerk.service import IngestResult

# The handler reads bodies with the ingest binding, not a struct; these types only describe them.
CloudEventBody = Annotated[Any, msgspec.Meta(extra_json_schema=CLOUD_EVENT_SCHEMA)]
# A batch is taken when at least one of its items is a valid event; the others are answered
# one by one in `failed` (like PutEvents' entries), so an item may be anything.
CloudEventBatch = Annotated[
    list[Any],
    msgspec.Meta(
        min_length=1,
        max_length=BindingLimits().max_batch_size,  # the default of --max-batch-events
        extra_json_schema={"contains": CLOUD_EVENT_SCHEMA},
    ),
]


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
        request_body={
            STRUCTURED_CONTENT_TYPE: CloudEventBody,
            BATCH_CONTENT_TYPE: CloudEventBatch,
            JSON_CONTENT_TYPE: CloudEventBody | CloudEventBatch,
        },
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
        path_params={"bus": name_param("the bus name")},
    ),
]
