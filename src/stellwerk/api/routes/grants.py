"""Grants of a bus: `PUT|DELETE /v1/buses/{bus}/grants/{tenant}`, `GET /v1/buses/{bus}/grants`.

The owner of a bus lets another tenant's rules put events on it (a `bus` target with `tenant`).
Revoking stops those deliveries within seconds; they end in the sender's dead-letter queue.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, path_name
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope


class GrantList(msgspec.Struct):
    """Tenants that may put events on the bus."""

    tenants: list[str]


async def put_grant(request: Request) -> Response:
    bus = bus_name(request)
    grantee = path_name(request, "tenant", "tenant")
    created = await platform_of(request).grants.grant(principal_of(request.scope), bus, grantee)
    return json_response(GrantList([grantee]), 201 if created else 200)


async def delete_grant(request: Request) -> Response:
    bus = bus_name(request)
    grantee = path_name(request, "tenant", "tenant")
    await platform_of(request).grants.revoke(principal_of(request.scope), bus, grantee)
    return Response(status_code=204)


async def list_grants(request: Request) -> Response:
    bus = bus_name(request)
    grantees = await platform_of(request).grants.grantees(principal_of(request.scope), bus)
    return json_response(GrantList(grantees))


_PARAMS = {"bus": name_param("the bus name"), "tenant": name_param("the tenant granted to")}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/grants",
        list_grants,
        "Tenants whose rules may put events on this bus",
        "grants",
        Scope.READ,
        responses={200: GrantList, **_ERRORS},
        path_params={"bus": name_param("the bus name")},
    ),
    Endpoint(
        "put",
        "/v1/buses/{bus}/grants/{tenant}",
        put_grant,
        "Let another tenant's rules put events on this bus",
        "grants",
        Scope.ADMIN,
        responses={200: GrantList, 201: GrantList, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/grants/{tenant}",
        delete_grant,
        "Revoke a grant",
        "grants",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params=_PARAMS,
    ),
]
