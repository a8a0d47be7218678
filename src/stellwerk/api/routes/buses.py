"""Buses: `PUT|GET|DELETE /v1/buses/{bus}` and `GET /v1/buses`, scoped to the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.auth import Scope
from stellwerk.names import NAME_RULE, InvalidNameError, check_name
from stellwerk.seams import Change
from stellwerk.storage.control import BusRecord, ConflictError, NotFoundError

ValidationMode = Literal["off", "warn", "enforce"]


class BusInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/buses/{bus}` (optional: an empty body creates the bus as it is).

    `schema_validation`: `off` (default), `warn` (store, but report events that break their
    type's schema), `enforce` (keep such events in the failed-events store instead of the bus).
    """

    description: str = ""
    schema_validation: ValidationMode = "off"


class Bus(msgspec.Struct):
    name: str
    description: str
    schema_validation: ValidationMode
    created_at: datetime
    updated_at: datetime


class BusList(msgspec.Struct):
    buses: list[Bus]


def _bus(record: BusRecord) -> Bus:
    return Bus(
        name=record.name,
        description=record.description,
        schema_validation=record.schema_validation,  # type: ignore[arg-type]
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def bus_name(request: Request) -> str:
    name: str = request.path_params["bus"]
    try:
        return check_name("bus", name)
    except InvalidNameError as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field="bus") from None


async def put_bus(request: Request) -> Response:
    name = bus_name(request)
    body = await read_json(request, BusInput, empty=BusInput())
    if len(body.description) > 512:
        raise ApiError(
            422,
            "ValidationFailed",
            "description is longer than 512 characters",
            field="$.description",
        )
    services = services_of(request)
    try:
        record, created = await services.control.put_bus(
            principal_of(request.scope).tenant_id,
            name,
            description=body.description,
            schema_validation=body.schema_validation,
            max_buses=services.settings.max_buses_per_tenant,
        )
    except ConflictError as exc:
        raise ApiError(409, "LimitExceeded", str(exc)) from None
    await services.changed(Change("bus", record.tenant_id, name))
    return json_response(_bus(record), 201 if created else 200)


async def get_bus(request: Request) -> Response:
    name = bus_name(request)
    record = await services_of(request).control.get_bus(principal_of(request.scope).tenant_id, name)
    if record is None:
        raise not_found(f"bus {name!r}")
    return json_response(_bus(record))


async def delete_bus(request: Request) -> Response:
    name = bus_name(request)
    services = services_of(request)
    tenant_id = principal_of(request.scope).tenant_id
    try:
        await services.control.delete_bus(tenant_id, name)
        await services.changed(Change("bus", tenant_id, name))
    except NotFoundError:
        raise not_found(f"bus {name!r}") from None
    except ConflictError as exc:
        raise ApiError(409, "Conflict", str(exc)) from None
    return Response(status_code=204)


async def list_buses(request: Request) -> Response:
    records = await services_of(request).control.list_buses(principal_of(request.scope).tenant_id)
    return json_response(BusList(buses=[_bus(r) for r in records]))


_BUS = {"bus": f"the bus name, {NAME_RULE}"}
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
