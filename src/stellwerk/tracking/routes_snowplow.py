"""The Snowplow collector's endpoints: `GET /i` (the pixel, one event in the query) and
`POST /com.snowplowanalytics.snowplow/tp2` (a `payload_data` body of events), as Snowplow's
trackers send them.

No API key: the events' app id (`aid`) is the write key of a `snowplow` source. Answers: the
pixel is a 1x1 GIF; a POST answers `{"accepted", "dropped"}` (and `failed`); errors are
Stellwerk's `{"error", "message", "field"}`. An oversized body is a 400, not a 413: Snowplow's
Python tracker retries every status but 400, 401, 403, 410 and 422, and a body too large now is
too large on every retry.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from stellwerk.api import ApiError, api_error, capability_of
from stellwerk.service import ServiceError
from stellwerk.tracking import browser
from stellwerk.tracking.admission import Refused, admitted, preflight
from stellwerk.tracking.bodies import decoded
from stellwerk.tracking.collector import Collected, Failure
from stellwerk.tracking.opened import NAME, TrackingOpened
from stellwerk.tracking.routes_segment import arrival_of
from stellwerk.tracking.snowplow import (
    ANONYMOUS_HEADER,
    NETWORK_COOKIE,
    NETWORK_ID,
    SNOWPLOW,
    events_of,
    network_cookie,
    write_key_of,
)
from stellwerk.tracking.snowplow import decoded as decoded_events

PIXEL_PATH: Final = "/i"
POST_PATH: Final = "/com.snowplowanalytics.snowplow/tp2"
# A transparent 1x1 GIF89a: header, screen of 1x1 with a 2-colour table, a graphic control
# extension marking colour 0 transparent, and one image of one pixel of colour 0.
PIXEL: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE: Final = {"Cache-Control": "no-store"}
_encode: Final = msgspec.json.Encoder().encode


class Answer(msgspec.Struct, omit_defaults=True):
    """A POST's answer: `accepted` events are durable (duplicates of earlier ones included),
    `dropped` were kept out by consent, `failed` were refused (by index)."""

    accepted: int
    dropped: int
    failed: list[Failure] | None = None


def snowplow_error(error: ApiError, headers: dict[str, str]) -> Response:
    """An error in Stellwerk's shape. A 413 becomes a 400 (see the module's docstring), and of
    the error's own headers only Retry-After is kept: a WWW-Authenticate challenge would make a
    browser show a login dialog."""
    kept = {k: v for k, v in error.headers.items() if k.lower() == "retry-after"}
    return Response(
        _encode(error.body()),
        status_code=400 if error.status == 413 else error.status,
        headers={**kept, **_NO_STORE, **headers},
        media_type="application/json",
    )


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message)


async def _events(request: Request, opened: TrackingOpened) -> list[Any]:
    if request.method == "GET":
        return [dict(request.query_params)]  # a name given twice: the last one counts
    body = decoded(
        await request.body(), request.headers.get("content-encoding"), opened.max_body_bytes
    )
    return events_of(body, max_batch=opened.max_batch)


async def _take(request: Request) -> tuple[Collected, dict[str, str]] | Response:
    """The request's events taken onto their source's bus (and the headers of the answer:
    CORS, and the network user id's cookie), or the error response.

    As Snowplow's collector does, the collector keeps a network user id (`nuid`) in a cookie
    of its own and writes it into each event, for the events that will be kept as they came
    (consented, as the browser tracker's visitor id); a tracker in anonymous mode (the
    `SP-Anonymous` header) gets neither."""
    allowed: dict[str, str] = {}
    try:
        opened = capability_of(request, NAME, TrackingOpened)
        events = await _events(request, opened)
        key = write_key_of(events)
        if key is None:
            raise _unauthorized(
                "a Snowplow tracker names its source by its app id (aid), the source's write "
                "key: no event has one"
            )
        binding = await opened.sources.resolve(key)
        if binding is None:
            raise _unauthorized(
                "the app id (aid) is not a valid write key (unknown, or its source was deleted)"
            )
        # The request's token is left to ingest, taken with the events' (one limiter call).
        allowed = await admitted(
            opened, binding, request.headers.get("origin"), "snowplow", rated=False
        )

        async def collect() -> tuple[str | None, Collected]:
            messages = decoded_events(events, key)
            arrival = arrival_of(request)
            network_id = None
            for message in messages:
                if isinstance(message, dict):
                    message.pop(NETWORK_ID, None)  # the collector's to set, never a tracker's
            if ANONYMOUS_HEADER not in request.headers:
                cookie = browser.visitor_of(request.cookies.get(NETWORK_COOKIE))
                network_id = cookie or browser.new_visitor()
                if not browser.with_visitor(messages, network_id, arrival, binding, NETWORK_ID):
                    network_id = None
            return network_id, await opened.collector.collect(binding, arrival, messages, SNOWPLOW)

        network_id, collected = await opened.gate.counted(binding.tenant.id, collect)
    except Refused as exc:
        return snowplow_error(exc.error, exc.cors)
    except ApiError as exc:
        return snowplow_error(exc, allowed)
    except ServiceError as exc:
        return snowplow_error(api_error(exc), allowed)
    collected.failed = [_with_id(failure, events) for failure in collected.failed]
    if collected.failed and not (collected.accepted or collected.dropped):
        first = collected.failed[0]
        several = len(collected.failed) > 1
        refused = ApiError(
            400,
            first.error,
            f"no event is valid; first: {first.message}" if several else first.message,
            field=first.field,
            failed=collected.failed,
        )
        return snowplow_error(refused, allowed)
    headers = dict(allowed)
    if network_id is not None and collected.accepted:  # not on a request refused as a whole
        headers["Set-Cookie"] = network_cookie(network_id, secure=request.url.scheme == "https")
    return collected, headers


def _with_id(failure: Failure, events: list[Any]) -> Failure:
    """A refused event's failure with its `eid` as `id`: the collector names ids by Segment's
    `messageId`, so an event refused before it became a CloudEvent comes without."""
    event = events[failure.index]
    eid = event.get("eid") if isinstance(event, dict) else None
    if failure.id is not None or not isinstance(eid, str):
        return failure
    return msgspec.structs.replace(failure, id=eid)


async def pixel(request: Request) -> Response:
    """`GET /i`: one event in the query string, answered with a GIF nobody may cache (each
    load of it must reach the collector). A HEAD is answered the same headers and stores
    nothing: link checkers and prefetchers ask with HEAD, and HEAD must not change anything."""
    if request.method == "HEAD":
        return Response(
            PIXEL, headers=_NO_STORE, media_type="image/gif"
        )  # the server sends no body
    taken = await _take(request)
    if isinstance(taken, Response):
        return taken
    return Response(PIXEL, headers={**_NO_STORE, **taken[1]}, media_type="image/gif")


async def post(request: Request) -> Response:
    """`POST /com.snowplowanalytics.snowplow/tp2`, or its CORS preflight."""
    if request.method == "OPTIONS":
        return await preflight(request, _refuse_preflight)
    taken = await _take(request)
    if isinstance(taken, Response):
        return taken
    collected, allowed = taken
    answer = Answer(
        accepted=collected.accepted, dropped=collected.dropped, failed=collected.failed or None
    )
    return Response(
        _encode(answer),
        headers={**_NO_STORE, **allowed},
        media_type="application/json",
    )


def _refuse_preflight(error: ApiError) -> Response:
    return snowplow_error(error, {})


ROUTES: Final[list[BaseRoute]] = [
    Route(PIXEL_PATH, pixel, methods=["GET"], include_in_schema=False),
    Route(POST_PATH, post, methods=["POST", "OPTIONS"], include_in_schema=False),
]
