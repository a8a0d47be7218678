"""Buses: `PUT|GET|DELETE /v1/buses/{bus}` and `GET /v1/buses`, scoped to the caller's tenant."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, path_name, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.auth import Scope
from stellwerk.service import Bus, BusInput


class BusList(msgspec.Struct):
    buses: list[Bus]


def bus_name(request: Request) -> str:
    return path_name(request, "bus", "bus")


async def put_bus(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, BusInput, empty=BusInput())
    bus, created = await platform_of(request).buses.put(principal_of(request.scope), name, body)
    return json_response(bus, 201 if created else 200)


async def get_bus(request: Request) -> Response:
    name = bus_name(request)
    return json_response(await platform_of(request).buses.get(principal_of(request.scope), name))


async def delete_bus(request: Request) -> Response:
    name = bus_name(request)
    await platform_of(request).buses.delete(principal_of(request.scope), name)
    return Response(status_code=204)


async def list_buses(request: Request) -> Response:
    buses = await platform_of(request).buses.all(principal_of(request.scope))
    return json_response(BusList(buses=buses))


_BUS = {"bus": name_param("the bus name")}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses",
        list_buses,
        "List the tenant's buses",
        "buses",
        Scope.READ,
        responses={200: BusList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "put",
        "/v1/buses/{bus}",
        put_bus,
        "Create or update a bus",
        "buses",
        Scope.ADMIN,
        request_body=BusInput,
        request_body_required=False,
        responses={200: Bus, 201: Bus, **_ERRORS, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody},
        path_params=_BUS,
    ),
    Endpoint(
        "get",
        "/v1/buses/{bus}",
        get_bus,
        "Describe a bus",
        "buses",
        Scope.READ,
        responses={200: Bus, **_ERRORS, 404: ErrorBody},
        path_params=_BUS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}",
        delete_bus,
        "Delete a bus (not `default`)",
        "buses",
        Scope.ADMIN,
        responses={204: None, **_ERRORS, 404: ErrorBody, 409: ErrorBody},
        path_params=_BUS,
    ),
]
