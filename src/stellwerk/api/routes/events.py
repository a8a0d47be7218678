"""Ingest: `POST /v1/buses/{bus}/events` in every mode of the CloudEvents HTTP binding.

The answer is 202 only after every accepted event is durable in the log. A batch may partly
succeed: valid events are stored and the others are listed in `failed` with their index, id and
reason. A request in which no event is valid is answered 400 with the same list, so that a single
bad event (structured or binary mode) gets a plain client error.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Principal, Scope
from stellwerk.ingest.binding import (
    BATCH_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    BindingError,
    DecodedEvent,
    EventFailure,
    decode_request,
)
from stellwerk.ingest.metrics import bus_metrics
from stellwerk.schemas import SchemaViolation, event_violations
from stellwerk.seams import LogOverloaded, NewEvent
from stellwerk.services import Services
from stellwerk.storage.control import NewFailedEvent

SCHEMA_FAILURE = "SchemaValidationFailed"
_encode: Final = msgspec.json.Encoder().encode


class FailedEvent(msgspec.Struct, omit_defaults=True):
    """An event that was not put on the bus. `failed_event_id`: kept in the failed-events store."""

    index: int
    error: str
    message: str
    id: str | None = None
    field: str | None = None
    failed_event_id: int | None = None


class SchemaWarning(msgspec.Struct):
    """An event stored although it breaks its type's schema (bus in `warn` mode)."""

    index: int
    id: str
    message: str


class IngestResult(msgspec.Struct):
    """`accepted` counts every event that is durable now, duplicates of earlier ones included.

    An event an erasure keeps out (suppression, see docs/erasure.md) is answered like a
    duplicate: counted in `accepted` and in `duplicates`, and not stored.

    `warnings` appears only on buses in `warn` mode, for stored events that break their schema.
    """

    accepted: int
    failed: list[FailedEvent]
    duplicates: int = 0
    warnings: list[SchemaWarning] | msgspec.UnsetType = msgspec.UNSET


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


def _failed(failure: EventFailure) -> FailedEvent:
    return FailedEvent(
        index=failure.index,
        id=failure.id,
        error=str(failure.code),
        message=failure.message,
        field=failure.attribute,
    )


async def put_events(request: Request) -> Response:
    """The route as Starlette calls it; `IngestFastPath` usually answers before it is reached."""
    name = bus_name(request)
    services = services_of(request)
    status, content = await ingest(
        services,
        principal_of(request.scope),
        name,
        request.headers.get("content-type"),
        request.headers,
        request.body,
    )
    return Response(content, status_code=status, media_type="application/json")


async def ingest(
    services: Services,
    principal: Principal,
    name: str,
    content_type: str | None,
    headers: Mapping[str, str],
    read_body: Callable[[], Awaitable[bytes]],
) -> tuple[int, bytes]:
    """Take one request's events onto a bus: the status and JSON body of the answer.

    Raises `ApiError` for an answer that is an error as a whole. Returns only once every
    accepted event is durable. The body is read once the bus is known to exist.
    """
    bus = await services.buses.bus(principal.tenant_id, name)
    if bus is None:
        raise not_found(f"bus {name!r}")
    body = await read_body()
    metrics = bus_metrics(services.ingest_metrics, principal.tenant, name)
    metrics.bytes_in.inc(len(body))
    try:
        results = decode_request(content_type, headers, body, services.binding_limits)
    except BindingError as exc:
        metrics.rejected(str(exc.code)).inc()
        raise ApiError(exc.status, str(exc.code), exc.message) from None

    decoded: list[DecodedEvent] = []
    failed: list[FailedEvent] = []
    for result in results:
        if isinstance(result, DecodedEvent):
            decoded.append(result)
        else:
            failed.append(_failed(result))
            metrics.rejected(failed[-1].error).inc()
    # Before the schema check: a suppressed event must not land in the failed-events store.
    decoded, suppressed = await services.suppressions.drop(
        principal.tenant_id, principal.tenant, name, decoded
    )
    warnings: list[SchemaWarning] = []
    if bus.schema_validation != "off" and decoded:
        decoded, refused, warnings = await check_schemas(
            services, principal.tenant_id, name, decoded, enforce=bus.schema_validation == "enforce"
        )
        failed = sorted([*failed, *refused], key=lambda f: f.index)
        services.ingest_metrics.failed_validation.labels(
            principal.tenant, name, bus.schema_validation
        ).inc(len(refused) + len(warnings))
    if not decoded and not suppressed:
        if not failed:
            raise ApiError(400, "InvalidRequest", "the request holds no events")
        first = failed[0]
        raise ApiError(
            400,
            first.error,
            first.message if len(failed) == 1 else f"no event is valid; first: {first.message}",
            field=first.field,
            accepted=0,
            failed=[msgspec.to_builtins(f) for f in failed],
        )

    wait = services.event_rate.acquire(principal.tenant_id, len(decoded))
    if wait > 0:
        metrics.rejected("TooManyRequests").inc(len(decoded))
        raise ApiError(
            429,
            "TooManyRequests",
            f"the tenant's event rate limit ({services.event_rate.rate:g}/s) is exhausted",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    tenant = principal.tenant
    batch = [NewEvent(tenant, name, d.id, d.source, d.type, d.subject, d.encoded) for d in decoded]
    try:
        appended = await services.event_log.append(batch)
    except LogOverloaded as exc:
        metrics.rejected("Overloaded").inc(len(batch))
        raise ApiError(
            503,
            "ServiceUnavailable",
            f"the event log is overloaded: {exc}",
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        ) from None
    services.log_watch.appended(tenant, name)
    duplicates = 0
    for outcome in appended:
        if outcome.duplicate:
            duplicates += 1
    metrics.accepted.inc(len(batch) - duplicates)
    if duplicates:
        metrics.duplicates.inc(duplicates)
    if not failed and not duplicates and not warnings and not suppressed:
        return 202, b'{"accepted":%d,"failed":[],"duplicates":0}' % len(batch)
    return 202, _encode(
        IngestResult(
            accepted=len(batch) + suppressed,
            failed=failed,
            duplicates=duplicates + suppressed,
            warnings=warnings or msgspec.UNSET,
        )
    )


async def check_schemas(
    services: Services, tenant_id: str, bus: str, decoded: list[DecodedEvent], *, enforce: bool
) -> tuple[list[DecodedEvent], list[FailedEvent], list[SchemaWarning]]:
    """Split events by their type's schema: kept, refused (stored as failed events), warned."""
    kept: list[DecodedEvent] = []
    refused: list[tuple[DecodedEvent, list[SchemaViolation]]] = []
    warnings: list[SchemaWarning] = []
    for item in decoded:
        schema = await services.buses.schema(tenant_id, item.type)
        violations = event_violations(item.event, schema) if schema else []
        if not violations:
            kept.append(item)
        elif enforce:
            refused.append((item, violations))
        else:
            kept.append(item)
            warnings.append(SchemaWarning(item.index, item.id, describe(violations)))
    if not refused:
        return kept, [], warnings
    ids = await services.control.failed_events.add(
        tenant_id,
        [
            NewFailedEvent(
                bus=bus,
                event_id=item.id,
                source=item.source,
                type=item.type,
                reason=SCHEMA_FAILURE,
                errors=[{"path": v.path, "message": v.message} for v in violations],
                body=item.encoded,
            )
            for item, violations in refused
        ],
    )
    failures = [
        FailedEvent(
            index=item.index,
            id=item.id,
            error=SCHEMA_FAILURE,
            message=describe(violations),
            field="data" + violations[0].path.rstrip("/").replace("/", "."),
            failed_event_id=failed_id,
        )
        for (item, violations), failed_id in zip(refused, ids, strict=True)
    ]
    return kept, failures, warnings


def describe(violations: list[SchemaViolation]) -> str:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"data does not match the schema of its type at {first.path}: {first.message}{more}"


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
