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
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from stellwerk.api import Answer as FastAnswer
from stellwerk.api import (
    Answerer,
    ApiError,
    ClientGone,
    Deferred,
    api_error,
    capability_of,
    too_large,
    whole_body,
)
from stellwerk.clock import utc_now
from stellwerk.events import format_rfc3339
from stellwerk.service import ServiceError
from stellwerk.tracking import segment_reader
from stellwerk.tracking.admission import Refused, admitted, preflight
from stellwerk.tracking.bodies import content_of, json_of
from stellwerk.tracking.collector import Arrival, Collected, Failure
from stellwerk.tracking.model import Binding
from stellwerk.tracking.opened import NAME, TrackingOpened
from stellwerk.tracking.refine import Refiner
from stellwerk.tracking.segment import SEGMENT, messages_of

_encode: Final = msgspec.json.Encoder().encode
_SUCCESS: Final = b'{"success":true}'
_JSON_TYPE: Final = "application/json"


class Answer(msgspec.Struct, omit_defaults=True):
    """A Segment answer. `failed`: messages of the request that were not taken (by index)."""

    success: bool
    code: str | None = None
    message: str | None = None
    error: str | None = None
    field: str | None = None
    failed: list[Failure] | None = None


class Reply(msgspec.Struct, frozen=True):
    """An answer of the Segment API, sent by the route (a `Response`) or by the fast path (an
    `Answer`) alike: the status, the JSON body and the headers beside its content type."""

    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> Response:
        return Response(
            self.body, status_code=self.status, headers=self.headers, media_type=_JSON_TYPE
        )

    def answer(self, route: str) -> FastAnswer:
        headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", _JSON_TYPE.encode()),
        ]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()
        ]
        return FastAnswer(route, self.status, headers, self.body)


def error_reply(error: ApiError, headers: dict[str, str]) -> Reply:
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
    return Reply(error.status, _encode(answer), {**kept, **headers})


def segment_error(error: ApiError, headers: dict[str, str]) -> Response:
    """`error_reply` as the routes answer it."""
    return error_reply(error, headers).response()


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
    return await _binding(opened, request.headers.get("authorization"), body)


async def _binding(opened: TrackingOpened, authorization: str | None, body: Any) -> Binding:
    key = write_key_of(authorization, body)
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


class _Heard(msgspec.Struct, frozen=True):
    """What a Segment call brings besides its body: the headers (the first of each name, as
    Starlette's `Headers.get` gives it), all of them but Authorization (the last of each, as
    a dict of Starlette's `Headers.items()`), and the client's address."""

    first: dict[str, str]
    rest: dict[str, str]
    client: str | None

    def arrival(self) -> Arrival:
        first = self.first
        return Arrival(
            received_at=format_rfc3339(utc_now()),
            ip=self.client,
            user_agent=first.get("user-agent"),
            referrer=first.get("referer"),
            origin=first.get("origin"),
            headers=self.rest,
        )


def _heard_of(request: Request) -> _Heard:
    headers = request.headers
    first = {k: headers[k] for k in headers}
    rest = {k: v for k, v in headers.items() if k != "authorization"}
    return _Heard(first, rest, request.client.host if request.client is not None else None)


def _heard_of_scope(scope: Scope) -> _Heard:
    first: dict[str, str] = {}
    rest: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        first.setdefault(name, value)
        if name != "authorization":
            rest[name] = value
    client = scope.get("client")
    return _Heard(first, rest, client[0] if client else None)


async def take(
    opened: TrackingOpened,
    heard: _Heard,
    read_body: Callable[[], Awaitable[bytes]],
    kind: str | None,
) -> Reply:
    """A Segment call: its messages onto the source's bus, and the answer the SDKs expect."""
    allowed: dict[str, str] = {}
    try:
        first = heard.first
        content = content_of(
            await read_body(), first.get("content-encoding"), opened.max_body_bytes
        )
        # The messages read for what the collector needs, the rest kept raw, while the
        # collector refines with the refiner it was made with (else, and for a body that
        # reader leaves, decoded whole).
        refiner = opened.collector.quick()
        fast = segment_reader.read(content, kind) if isinstance(refiner, Refiner) else None
        body = fast.key_holder() if fast is not None else json_of(content)
        binding = await _binding(opened, first.get("authorization"), body)
        # The request's token is left to ingest, taken with the events' (one limiter call).
        allowed = await admitted(opened, binding, first.get("origin"), "segment", rated=False)

        async def collect() -> Collected:
            arrival = heard.arrival()
            if fast is not None and isinstance(refiner, Refiner):
                messages = fast.messages(refiner, arrival, binding, max_batch=opened.max_batch)
            else:
                messages = messages_of(body, kind, max_batch=opened.max_batch)
            return await opened.collector.collect(binding, arrival, messages, SEGMENT)

        collected = await opened.gate.counted(binding.tenant.id, collect)
    except Refused as exc:
        return error_reply(exc.error, exc.cors)
    except ApiError as exc:
        return error_reply(exc, allowed)
    except ServiceError as exc:
        return error_reply(api_error(exc), allowed)
    if not collected.failed:
        return Reply(200, _SUCCESS, allowed)
    if collected.accepted or collected.dropped:
        return Reply(200, _encode(Answer(success=True, failed=collected.failed)), allowed)
    first_failure = collected.failed[0]
    several = len(collected.failed) > 1
    refused = ApiError(
        400,
        first_failure.error,
        f"no message is valid; first: {first_failure.message}"
        if several
        else first_failure.message,
        field=first_failure.field,
        failed=collected.failed,
    )
    return error_reply(refused, allowed)


async def _take(request: Request, kind: str | None) -> Response:
    try:
        opened = capability_of(request, NAME, TrackingOpened)
    except ApiError as exc:
        return segment_error(exc, {})
    return (await take(opened, _heard_of(request), request.body, kind)).response()


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


def fast_path(opened: TrackingOpened) -> Answerer:
    """A `POST` of the Segment API taken whole ahead of the app's stack (`Deferred`), answered
    exactly as its route answers it: one Starlette pass costs about as much as the collector
    spends on a message. Left to the app: preflights, a root path, a declared
    `Content-Length` that is not a number within `--max-body-bytes` (refused there, in front
    of every route, as documented), and a request through a proxy (`X-Forwarded-For`)."""
    limit = opened.max_body_bytes

    def answerer(scope: Scope) -> Deferred | None:
        path = scope["path"]
        if path not in PATHS or scope["method"] != "POST" or scope.get("root_path"):
            return None
        for name, value in scope["headers"]:
            if name == b"content-length" and not (value.isdigit() and int(value) <= limit):
                return None
            if name == b"x-forwarded-for":
                # The fast paths run before the app's proxy-headers layer (`stellwerk serve`
                # applies them behind them): only the app knows whether to trust the header,
                # and the client's address is what enrichment anonymises and locates.
                return None
        kind = PATHS[path]
        return Deferred(path, lambda receive: _respond(opened, scope, receive, kind))

    return answerer


async def _respond(
    opened: TrackingOpened, scope: Scope, receive: Receive, kind: str | None
) -> FastAnswer:
    limit = opened.max_body_bytes

    async def read_body() -> bytes:
        return await whole_body(receive, limit, too_large)

    try:
        reply = await take(opened, _heard_of_scope(scope), read_body, kind)
    except ClientGone:
        return FastAnswer(scope["path"], 400, [(b"content-length", b"0")])
    return reply.answer(scope["path"])
