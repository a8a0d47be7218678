"""The Segment-compatible HTTP API: `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`,
`/v1/group`, `/v1/alias`, `/v1/batch` and `/v1/import`, as Segment's and RudderStack's SDKs
call them.

These routes take no API key: the write key, as HTTP Basic user or as `writeKey` in the body,
names the source. Answers are Segment's: `200 {"success": true}`, and errors as
`{"success": false, "code", "message"}` (the SDKs read `code` and `message`), with Stellwerk's
`error` and `field` beside them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from stellwerk.api import ApiError, api_error, capability_of
from stellwerk.clock import utc_now
from stellwerk.events import format_rfc3339
from stellwerk.service import ServiceError
from stellwerk.tracking.admission import Refused, admitted, preflight
from stellwerk.tracking.bodies import decoded
from stellwerk.tracking.collector import Arrival, Failure
from stellwerk.tracking.model import Binding
from stellwerk.tracking.opened import NAME, TrackingOpened
from stellwerk.tracking.segment import SEGMENT, messages_of

_encode: Final = msgspec.json.Encoder().encode
_SUCCESS: Final = b'{"success":true}'


class Answer(msgspec.Struct, omit_defaults=True):
    """A Segment answer. `failed`: messages of the request that were not taken (by index)."""

    success: bool
    code: str | None = None
    message: str | None = None
    error: str | None = None
    field: str | None = None
    failed: list[Failure] | None = None


def segment_error(error: ApiError, headers: dict[str, str]) -> Response:
    """An error in Segment's shape (`code`, `message`), Stellwerk's `error` and `field` beside."""
    field = error.extra.get("field")
    failed = error.extra.get("failed")
    answer = Answer(
        success=False,
        code=error.error,
        message=error.message,
        error=error.error,
        field=field if isinstance(field, str) else None,
        failed=failed if isinstance(failed, list) else None,
    )
    # Only Retry-After of the error's own headers: a WWW-Authenticate challenge would make a
    # browser show a login dialog.
    kept = {k: v for k, v in error.headers.items() if k.lower() == "retry-after"}
    return Response(
        _encode(answer),
        status_code=error.status,
        headers={**kept, **headers},
        media_type="application/json",
    )


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message)


def write_key_of(authorization: str | None, body: Any) -> str:
    """The write key: the user of HTTP Basic credentials, else the body's `writeKey`."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise _unauthorized("the Authorization header must be 'Basic <writeKey:>'")
        try:
            text = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized("the Basic credentials are not valid base64 of 'user:'") from None
        user = text.partition(":")[0]
        if user:
            return user
    key = body.get("writeKey") if isinstance(body, dict) else None
    if isinstance(key, str) and key:
        return key
    raise _unauthorized("a write key is required: as the HTTP Basic user or as writeKey")


async def binding_of(opened: TrackingOpened, request: Request, body: Any) -> Binding:
    """The source the request's write key names (Basic user or `writeKey`), or 401."""
    key = write_key_of(request.headers.get("authorization"), body)
    binding = await opened.sources.resolve(key)
    if binding is None:
        raise _unauthorized("the write key is not valid (unknown, or its source was deleted)")
    return binding


def arrival_of(request: Request) -> Arrival:
    """What the request tells about the sender of its messages."""
    headers = request.headers
    return Arrival(
        received_at=format_rfc3339(utc_now()),
        ip=request.client.host if request.client is not None else None,
        user_agent=headers.get("user-agent"),
        referrer=headers.get("referer"),
        origin=headers.get("origin"),
        headers={k: v for k, v in headers.items() if k != "authorization"},
    )


async def _take(request: Request, kind: str | None) -> Response:
    allowed: dict[str, str] = {}
    try:
        opened = capability_of(request, NAME, TrackingOpened)
        body = decoded(
            await request.body(), request.headers.get("content-encoding"), opened.max_body_bytes
        )
        binding = await binding_of(opened, request, body)
        allowed = await admitted(opened, binding, request.headers.get("origin"), "segment")
        messages = messages_of(body, kind, max_batch=opened.max_batch)
        collected = await opened.collector.collect(binding, arrival_of(request), messages, SEGMENT)
    except Refused as exc:
        return segment_error(exc.error, exc.cors)
    except ApiError as exc:
        return segment_error(exc, allowed)
    except ServiceError as exc:
        return segment_error(api_error(exc), allowed)
    if not collected.failed:
        return Response(_SUCCESS, headers=allowed, media_type="application/json")
    if collected.accepted or collected.dropped:
        return Response(
            _encode(Answer(success=True, failed=collected.failed)),
            headers=allowed,
            media_type="application/json",
        )
    first = collected.failed[0]
    several = len(collected.failed) > 1
    refused = ApiError(
        400,
        first.error,
        f"no message is valid; first: {first.message}" if several else first.message,
        field=first.field,
        failed=collected.failed,
    )
    return segment_error(refused, allowed)


def refuse_preflight(error: ApiError) -> Response:
    return segment_error(error, {})


def _endpoint(kind: str | None) -> Any:
    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return await preflight(request, refuse_preflight)
        return await _take(request, kind)

    return endpoint


PATHS: Final = {
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
    "/v1/batch": None,
    "/v1/import": None,
}
ROUTES: Final[list[BaseRoute]] = [
    Route(path, _endpoint(kind), methods=["POST", "OPTIONS"], include_in_schema=False)
    for path, kind in PATHS.items()
]
