"""The schema registry: `PUT|GET|DELETE /v1/schemas/{type}`, versions, and the list of types."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.openapi import Parameter
from stellwerk.auth import Scope
from stellwerk.service import TYPE_RULE, SchemaInput, SchemaVersion, checked_type


class SchemaVersionList(msgspec.Struct):
    versions: list[SchemaVersion]


class SchemaList(msgspec.Struct):
    """The latest version of every type's schema."""

    schemas: list[SchemaVersion]


def event_type(request: Request) -> str:
    value: str = request.path_params["type"]
    return checked_type(value)


def version_param(request: Request) -> int | None:
    text = request.query_params.get("version")
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ApiError(400, "InvalidRequest", "version must be a positive integer", field="version")
    return int(text)


async def put_schema(request: Request) -> Response:
    type_ = event_type(request)
    body = await read_json(request, SchemaInput)
    schemas = platform_of(request).schemas
    version, created = await schemas.put(principal_of(request.scope), type_, body)
    return json_response(version, 201 if created else 200)


async def get_schema(request: Request) -> Response:
    type_ = event_type(request)
    version = version_param(request)
    schemas = platform_of(request).schemas
    return json_response(await schemas.get(principal_of(request.scope), type_, version))


async def list_versions(request: Request) -> Response:
    type_ = event_type(request)
    versions = await platform_of(request).schemas.versions(principal_of(request.scope), type_)
    return json_response(SchemaVersionList(versions=versions))


async def delete_schema(request: Request) -> Response:
    type_ = event_type(request)
    version = version_param(request)
    await platform_of(request).schemas.delete(principal_of(request.scope), type_, version)
    return Response(status_code=204)


async def list_schemas(request: Request) -> Response:
    latest = await platform_of(request).schemas.latest(principal_of(request.scope))
    return json_response(SchemaList(schemas=latest))


_TYPE_PARAM = {
    "type": Parameter(
        f"the event type, {TYPE_RULE}",
        Annotated[str, msgspec.Meta(pattern=f"^{TYPE_RULE}$")],
    )
}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/schemas",
        list_schemas,
        "List event types with a schema (latest versions)",
        "schemas",
        Scope.READ,
        responses={200: SchemaList},
    ),
    Endpoint(
        "put",
        "/v1/schemas/{type}",
        put_schema,
        "Add a schema version for an event type (unchanged schema: no new version)",
        "schemas",
        Scope.ADMIN,
        request_body=SchemaInput,
        responses={200: SchemaVersion, 201: SchemaVersion, 422: ErrorBody, **_ERRORS},
        path_params=_TYPE_PARAM,
    ),
    Endpoint(
        "get",
        "/v1/schemas/{type}",
        get_schema,
        "The latest schema of an event type (or ?version=N)",
        "schemas",
        Scope.READ,
        responses={200: SchemaVersion, **_ERRORS},
        path_params=_TYPE_PARAM,
    ),
    Endpoint(
        "delete",
        "/v1/schemas/{type}",
        delete_schema,
        "Delete every version of a schema (or ?version=N)",
        "schemas",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params=_TYPE_PARAM,
    ),
    Endpoint(
        "get",
        "/v1/schemas/{type}/versions",
        list_versions,
        "Every version of an event type's schema",
        "schemas",
        Scope.READ,
        responses={200: SchemaVersionList, **_ERRORS},
        path_params=_TYPE_PARAM,
    ),
]
