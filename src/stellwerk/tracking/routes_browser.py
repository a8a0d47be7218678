"""The browser tracker's endpoints: `GET /t.js` (the script), `POST /v1/b` (its batches) and
`GET /v1/b/settings` (what the script must know of its source before it sends anything).

`/v1/b` takes Segment's batch shape (`{"writeKey", "batch": [...]}`) from a `browser`
source's write key, so the collector path, consent and enrichment treat the tracker's messages
as they treat Segment's; it differs from `/v1/batch` in the source kind it takes and in the
visitor cookie it sets (see `browser`). Answers and errors are Segment's.
"""

from __future__ import annotations

from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from stellwerk.api import ApiError, api_error, capability_of
from stellwerk.capability import Answer as FastAnswer
from stellwerk.capability import Answerer, Deferred, Opened
from stellwerk.service import ServiceError
from stellwerk.tracking import browser
from stellwerk.tracking.admission import Refused, admitted, preflight
from stellwerk.tracking.bodies import decoded
from stellwerk.tracking.collector import Collected
from stellwerk.tracking.opened import NAME, TrackingOpened
from stellwerk.tracking.routes_segment import (
    Answer,
    arrival_of,
    binding_of,
    refuse_preflight,
    segment_error,
)
from stellwerk.tracking.routes_segment import fast_path as segment_fast_path
from stellwerk.tracking.segment import SEGMENT, messages_of

BATCH_PATH: Final = "/v1/b"
SETTINGS_PATH: Final = "/v1/b/settings"
SETTINGS_MAX_AGE: Final = 300
_SCRIPT: Final = browser.load_script()
_encode: Final = msgspec.json.Encoder().encode
_NO_STORE: Final = {"Cache-Control": "no-store"}
_SCRIPT_HEADERS: Final = {
    "Cache-Control": f"public, max-age={browser.SCRIPT_MAX_AGE}",
    "Vary": "Accept-Encoding",
    # A page on another origin loads it with <script>: it needs no CORS, but may ask for it
    # (crossorigin="anonymous", to see its errors).
    "Access-Control-Allow-Origin": "*",
}


class Settings(msgspec.Struct, rename="camel"):
    """What the script asks of its source: whether nothing may be sent before the visitor
    consents (`browser.consent_first`), and the purposes the consent must cover."""

    consent_required: bool
    purposes: list[str]


def script_response(*, gzipped: bool, if_none_match: str | None) -> Response:
    """`/t.js` as the browser asked for it: gzipped when it takes gzip, 304 when its copy is
    current. Shared by the route and the fast path, so both answer alike."""
    etag = _SCRIPT.gzip_etag if gzipped else _SCRIPT.etag
    headers = {**_SCRIPT_HEADERS, "ETag": etag}
    if browser.etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    body = _SCRIPT.gzipped if gzipped else _SCRIPT.plain
    return Response(body, headers=headers, media_type="text/javascript; charset=utf-8")


async def script(request: Request) -> Response:
    """`GET /t.js` (and HEAD), when the fast path left it to the app."""
    return script_response(
        gzipped=browser.accepts_gzip(request.headers.get("accept-encoding")),
        if_none_match=request.headers.get("if-none-match"),
    )


def _answer(response: Response) -> FastAnswer:
    status, headers, body = response.status_code, response.raw_headers, bytes(response.body)
    return FastAnswer(browser.SCRIPT_PATH, status, headers, body)


# The four answers a GET can get, built once: plain or gzipped, whole or 304.
_FULL: Final = {g: _answer(script_response(gzipped=g, if_none_match=None)) for g in (False, True)}
_UNCHANGED: Final = {
    g: _answer(script_response(gzipped=g, if_none_match=_SCRIPT.gzip_etag if g else _SCRIPT.etag))
    for g in (False, True)
}


def script_answer(scope: Scope) -> FastAnswer | None:
    """The fast path (`Capability.fast_path`): a GET of `/t.js` answered ahead of the app's
    middleware and routing, from the answers built once. A query string (`/t.js?v=2`, to bust
    a cache) is ignored as the route ignores it; HEAD, and a request under a root path, go on
    to the route."""
    if scope["path"] != browser.SCRIPT_PATH or scope["method"] != "GET" or scope.get("root_path"):
        return None
    accept_encoding = if_none_match = None
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            accept_encoding = value.decode("latin-1")
        elif name == b"if-none-match":
            if_none_match = value.decode("latin-1")
    gzipped = browser.accepts_gzip(accept_encoding)
    etag = _SCRIPT.gzip_etag if gzipped else _SCRIPT.etag
    if if_none_match is not None and browser.etag_matches(if_none_match, etag):
        return _UNCHANGED[gzipped]
    return _FULL[gzipped]


def fast_path(opened: Opened) -> Answerer:
    """The tracking capability's `Capability.fast_path`: `/t.js` from the answers built once,
    and the Segment API's `POST`s taken whole (`routes_segment.fast_path`)."""
    assert isinstance(opened, TrackingOpened)
    segment = segment_fast_path(opened)

    def answerer(scope: Scope) -> FastAnswer | Deferred | None:
        return script_answer(scope) or segment(scope)

    return answerer


async def settings(request: Request) -> Response:
    """`GET /v1/b/settings?writeKey=`: the source's settings the script needs. Sets no cookie
    and stores nothing: the script asks before the visitor has said anything."""
    allowed: dict[str, str] = {}
    try:
        opened = capability_of(request, NAME, TrackingOpened)
        key = request.query_params.get("writeKey")
        binding = await binding_of(opened, request, {"writeKey": key})
        origin = request.headers.get("origin")
        allowed = await admitted(opened, binding, origin, "browser", rated=False)
    except Refused as exc:
        return segment_error(exc.error, {**_NO_STORE, **exc.cors})
    except ApiError as exc:
        return segment_error(exc, {**_NO_STORE, **allowed})
    except ServiceError as exc:
        return segment_error(api_error(exc), {**_NO_STORE, **allowed})
    answer = Settings(
        consent_required=browser.consent_first(binding), purposes=list(binding.consent_purposes)
    )
    return Response(
        _encode(answer),
        headers={"Cache-Control": f"private, max-age={SETTINGS_MAX_AGE}", **allowed},
        media_type="application/json",
    )


async def batch(request: Request) -> Response:
    """`POST /v1/b`: a batch of the script's messages, onto the source's bus. The messages that
    will be kept as they came (their consent covers the source's purposes) get the visitor id
    of the cookie as `anonymousId` (a new one is minted when the browser has none), and the
    answer sets the cookie again, for another 400 days."""
    if request.method == "OPTIONS":
        return await preflight(request, refuse_preflight)
    allowed: dict[str, str] = {}
    try:
        opened = capability_of(request, NAME, TrackingOpened)
        body = decoded(
            await request.body(), request.headers.get("content-encoding"), opened.max_body_bytes
        )
        binding = await binding_of(opened, request, body)
        # The request's token is left to ingest, taken with the events' (one limiter call).
        allowed = await admitted(
            opened, binding, request.headers.get("origin"), "browser", rated=False
        )
        visitor = browser.visitor_of(request.cookies.get(browser.COOKIE)) or browser.new_visitor()
        arrival = arrival_of(request)

        async def collect() -> tuple[bool, Collected]:
            messages = messages_of(body, None, max_batch=opened.max_batch)
            identified = browser.with_visitor(messages, visitor, arrival, binding)
            return identified, await opened.collector.collect(binding, arrival, messages, SEGMENT)

        identified, collected = await opened.gate.counted(binding.tenant.id, collect)
    except Refused as exc:
        return segment_error(exc.error, {**_NO_STORE, **exc.cors})
    except ApiError as exc:
        return segment_error(exc, {**_NO_STORE, **allowed})
    except ServiceError as exc:
        return segment_error(api_error(exc), {**_NO_STORE, **allowed})
    headers = {**_NO_STORE, **allowed}
    if identified and collected.accepted:  # not on a request refused as a whole
        headers["Set-Cookie"] = browser.visitor_cookie(
            visitor, secure=request.url.scheme == "https"
        )
    if collected.failed and not (collected.accepted or collected.dropped):
        first = collected.failed[0]
        refused = ApiError(400, first.error, first.message, field=first.field)
        return segment_error(refused, headers)
    answer = Answer(success=True, failed=collected.failed or None)
    return Response(_encode(answer), headers=headers, media_type="application/json")


ROUTES: Final[list[BaseRoute]] = [
    Route(browser.SCRIPT_PATH, script, methods=["GET"], include_in_schema=False),
    Route(BATCH_PATH, batch, methods=["POST", "OPTIONS"], include_in_schema=False),
    Route(SETTINGS_PATH, settings, methods=["GET"], include_in_schema=False),
]
