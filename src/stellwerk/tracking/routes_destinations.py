"""`POST /v1/buses/{bus}/destinations`: a tracking destination made from a preset, in one
call. A thin adapter over `destinations.destination_of` and the `Connections` and `Rules`
facades: what it makes is a connection holding the service's credential and a rule like any
other, read, changed and deleted at `/v1/buses/{bus}/rules/{name}`."""

from __future__ import annotations

import contextlib
import re
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import (
    ApiError,
    Endpoint,
    ErrorBody,
    json_response,
    name_param,
    path_name,
    platform_of,
    principal_of,
    read_json,
)
from stellwerk.auth import Scope
from stellwerk.rules import Rule
from stellwerk.service import Conflict, NotFound
from stellwerk.tracking.destinations import (
    DESCRIBED,
    DestinationInput,
    connection_name_of,
    destination_of,
)

TAG = "tracking"
_NAMED: Final = re.compile(r"(?:missing required|unknown) field `([^`]+)`(?: - at `(\$[^`]*)`)?$")


async def read_destination(request: Request) -> DestinationInput:
    """The body as a preset's settings; 422 naming the field, a missing or unknown one included
    (msgspec names the object such a field is missing from or unknown in, not the field)."""
    try:
        body: DestinationInput = await read_json(request, DestinationInput)  # type: ignore[arg-type]
    except ApiError as exc:
        found = _NAMED.search(exc.message) if exc.status == 422 else None
        if found is None:
            raise
        raise ApiError(
            422, "ValidationFailed", exc.message, field=f"{found.group(2) or '$'}.{found.group(1)}"
        ) from None
    return body


async def post_destination(request: Request) -> Response:
    bus = path_name(request, "bus", "bus")
    body = await read_destination(request)
    made = destination_of(bus, body)
    platform = platform_of(request)
    principal = principal_of(request.scope)
    await platform.buses.get(principal, bus)  # 404 before anything is saved
    try:
        existing = await platform.rules.get(principal, bus, made.name)
    except NotFound:
        existing = None
    if existing is not None and not existing.description.startswith(DESCRIBED):
        # A hand-made rule of the same name is the user's: a preset never overwrites it.
        raise Conflict(
            f"rule {made.name!r} exists and is not a tracking destination; give another name",
            field="$.name",
        )
    try:
        held = await platform.connections.get(principal, made.connection_name)
    except NotFound:
        held = None
    if held is not None and not made.same_kind(held.connection):
        raise Conflict(
            f"connection {made.connection_name!r} exists and is not this destination's; "
            "give another name",
            field="$.name",
        )
    await platform.connections.put(principal, made.connection_name, made.connection)
    rule, created = await platform.rules.put(principal, bus, made.name, made.rule)
    return json_response(rule, 201 if created else 200)


async def delete_destination(request: Request) -> Response:
    """The destination's rule and, unless another rule of the tenant names it, the connection
    holding its credential: deleting the rule alone (`DELETE .../rules/{name}`) leaves the
    connection, since the core's rule deletion knows nothing of tracking."""
    bus = path_name(request, "bus", "bus")
    name = path_name(request, "destination", "name")
    platform = platform_of(request)
    principal = principal_of(request.scope)
    rule = await platform.rules.get(principal, bus, name)  # 404: no such rule
    if not rule.description.startswith(DESCRIBED):
        raise Conflict(
            f"rule {name!r} is not a tracking destination; delete it as a rule",
            field="name",
        )
    own = connection_name_of(bus, name)
    await platform.rules.delete(principal, bus, name)
    if not any(t.connection == own for t in rule.targets):
        return Response(status_code=204)  # changed by hand: its connection is not its own
    for each in await platform.buses.all(principal):
        for other in await platform.rules.all(principal, each.name):
            if any(t.connection == own for t in other.targets):
                return Response(status_code=204)  # another rule sends with it: kept
    with contextlib.suppress(NotFound):  # deleted by hand already
        await platform.connections.delete(principal, own)
    return Response(status_code=204)


_ERRORS: dict[int, type | None] = {
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    404: ErrorBody,
    409: ErrorBody,
    415: ErrorBody,
    422: ErrorBody,
}

ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/buses/{bus}/destinations",
        post_destination,
        "Create (or replace) a tracking destination from a preset: ga4, meta or segment",
        TAG,
        Scope.ADMIN,
        request_body=DestinationInput,
        responses={200: Rule, 201: Rule, **_ERRORS},
        path_params={"bus": name_param("the bus's name")},
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/destinations/{name}",
        delete_destination,
        "Delete a tracking destination: its rule, and the connection holding its credential",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params={
            "bus": name_param("the bus's name"),
            "name": name_param("the destination's (its rule's) name"),
        },
    ),
]
