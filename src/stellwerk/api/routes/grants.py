"""Grants of a bus: `PUT|DELETE /v1/buses/{bus}/grants/{tenant}`, `GET /v1/buses/{bus}/grants`.

The owner of a bus lets another tenant's rules put events on it (a `bus` target with `tenant`).
Revoking stops those deliveries within seconds; they end in the sender's dead-letter queue.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.names import InvalidNameError, check_name
from stellwerk.seams import Change


class GrantList(msgspec.Struct):
    """Tenants that may put events on the bus."""

    tenants: list[str]


def grantee_name(request: Request) -> str:
    name: str = request.path_params["tenant"]
    try:
        return check_name("tenant", name)
    except InvalidNameError as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field="tenant") from None


async def put_grant(request: Request) -> Response:
    bus = bus_name(request)
    grantee = grantee_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    if await services.control.get_bus(principal.tenant_id, bus) is None:
        raise not_found(f"bus {bus!r}")
    target = await services.control.get_tenant(grantee)
    if target is None:
        raise not_found(f"tenant {grantee!r}")
    if target.id == principal.tenant_id:
        raise ApiError(400, "InvalidRequest", "a tenant needs no grant for its own buses")
    created = await services.control.grants.grant(principal.tenant_id, bus, target.id)
    return json_response(GrantList([grantee]), 201 if created else 200)


async def delete_grant(request: Request) -> Response:
    bus = bus_name(request)
    grantee = grantee_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    target = await services.control.get_tenant(grantee)
    if target is None or not await services.control.grants.revoke(
        principal.tenant_id, bus, target.id
    ):
        raise not_found(f"grant of bus {bus!r} to {grantee!r}")
    await services.changed(Change("grant", principal.tenant, bus, grantee))
    return Response(status_code=204)


async def list_grants(request: Request) -> Response:
    bus = bus_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    if await services.control.get_bus(principal.tenant_id, bus) is None:
        raise not_found(f"bus {bus!r}")
    return json_response(
        GrantList(await services.control.grants.grantees(principal.tenant_id, bus))
    )


_PARAMS = {"bus": "the bus name", "tenant": "the tenant granted to"}
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
        path_params={"bus": "the bus name"},
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
