"""The schema registry: `PUT|GET|DELETE /v1/schemas/{type}`, versions, and the list of types."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.auth import Scope
from stellwerk.schemas import InvalidSchemaError, compile_schema
from stellwerk.seams import Change
from stellwerk.storage.control import SchemaRecord

TYPE_RULE = "[A-Za-z0-9._:-]{1,256}"
_TYPE = re.compile(rf"^{TYPE_RULE}\Z")


class SchemaInput(msgspec.Struct, forbid_unknown_fields=True):
    """`schema` is a JSON Schema (draft 4, 6, 7, 2019-09 or 2020-12) for the events' `data`."""

    schema: Any
    description: str = ""


class SchemaVersion(msgspec.Struct):
    type: str
    version: int
    schema: Any
    description: str
    created_at: datetime


class SchemaVersionList(msgspec.Struct):
    versions: list[SchemaVersion]


class SchemaList(msgspec.Struct):
    """The latest version of every type's schema."""

    schemas: list[SchemaVersion]


def _version(record: SchemaRecord) -> SchemaVersion:
    return SchemaVersion(
        type=record.type,
        version=record.version,
        schema=record.document,
        description=record.description,
        created_at=record.created_at,
    )


def event_type(request: Request) -> str:
    value: str = request.path_params["type"]
    if not _TYPE.match(value):
        raise ApiError(
            400, "InvalidRequest", f"event type {value!r} must match {TYPE_RULE}", field="type"
        )
    return value


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
    try:
        compile_schema(body.schema)
    except InvalidSchemaError as exc:
        raise ApiError(422, "InvalidSchema", str(exc), field="$.schema") from None
    if len(body.description) > 512:
        raise ApiError(
            422, "ValidationFailed", "description is longer than 512", field="$.description"
        )
    services = services_of(request)
    tenant_id = principal_of(request.scope).tenant_id
    record, created = await services.control.schemas.put(
        tenant_id, type_, body.schema, body.description
    )
    await services.changed(Change("schema", tenant_id, name=type_))
    return json_response(_version(record), 201 if created else 200)


async def get_schema(request: Request) -> Response:
    type_ = event_type(request)
    version = version_param(request)
    tenant_id = principal_of(request.scope).tenant_id
    record = await services_of(request).control.schemas.get(tenant_id, type_, version)
    if record is None:
        raise not_found(f"schema {type_!r}" + (f" version {version}" if version else ""))
    return json_response(_version(record))


async def list_versions(request: Request) -> Response:
    type_ = event_type(request)
    tenant_id = principal_of(request.scope).tenant_id
    records = await services_of(request).control.schemas.versions(tenant_id, type_)
    if not records:
        raise not_found(f"schema {type_!r}")
    return json_response(SchemaVersionList(versions=[_version(r) for r in records]))


async def delete_schema(request: Request) -> Response:
    type_ = event_type(request)
    version = version_param(request)
    services = services_of(request)
    tenant_id = principal_of(request.scope).tenant_id
    if not await services.control.schemas.delete(tenant_id, type_, version):
        raise not_found(f"schema {type_!r}" + (f" version {version}" if version else ""))
    await services.changed(Change("schema", tenant_id, name=type_))
    return Response(status_code=204)


async def list_schemas(request: Request) -> Response:
    tenant_id = principal_of(request.scope).tenant_id
    records = await services_of(request).control.schemas.latest_of_each(tenant_id)
    return json_response(SchemaList(schemas=[_version(r) for r in records]))


_TYPE_PARAM = {"type": f"the event type, {TYPE_RULE}"}
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
