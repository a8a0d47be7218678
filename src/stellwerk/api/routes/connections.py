"""Connections: `PUT|GET|DELETE /v1/connections/{name}` and `GET /v1/connections`.

A connection is reusable authorization for HTTP targets: `basic`, `api_key` or
`oauth_client_credentials`. Secrets are sealed at rest and never shown again after they are
saved; `GET` shows everything else.
"""

from __future__ import annotations

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
from stellwerk.delivery.targets import parse_connection
from stellwerk.names import NAME_RULE, InvalidNameError, check_name
from stellwerk.rules import InvalidConnectionError, public_view
from stellwerk.storage.control import ConnectionRecord


class ConnectionInput(msgspec.Struct):
    """`{"type": "basic", "username", "password"}`, `{"type": "api_key", "header", "value"}`, or
    `{"type": "oauth_client_credentials", "token_url", "client_id", "client_secret", "scope"?,
    "extra_params"?, "client_auth"?: "basic"|"body"}`."""

    type: str


class Connection(msgspec.Struct):
    name: str
    connection: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ConnectionList(msgspec.Struct):
    connections: list[Connection]


def _view(record: ConnectionRecord) -> Connection:
    return Connection(record.name, public_view(record.spec), record.created_at, record.updated_at)


def connection_name(request: Request) -> str:
    name: str = request.path_params["name"]
    try:
        return check_name("connection", name)
    except InvalidNameError as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field="name") from None


async def put_connection(request: Request) -> Response:
    name = connection_name(request)
    body = await read_json(request, dict[str, Any])
    services = services_of(request)
    try:
        spec = parse_connection(body, allow_private=services.settings.allow_private_targets)
    except InvalidConnectionError as exc:
        raise ApiError(400, "InvalidConnection", str(exc), field=f"$.{exc.field}") from None
    principal = principal_of(request.scope)
    record, created = await services.control.connections.put(principal.tenant_id, name, spec)
    await services.rules_changed(principal.tenant_id, None)
    return json_response(_view(record), 201 if created else 200)


async def get_connection(request: Request) -> Response:
    name = connection_name(request)
    tenant_id = principal_of(request.scope).tenant_id
    record = await services_of(request).control.connections.get(tenant_id, name)
    if record is None:
        raise not_found(f"connection {name!r}")
    return json_response(_view(record))


async def list_connections(request: Request) -> Response:
    tenant_id = principal_of(request.scope).tenant_id
    records = await services_of(request).control.connections.for_tenant(tenant_id)
    return json_response(ConnectionList([_view(r) for r in records]))


async def delete_connection(request: Request) -> Response:
    name = connection_name(request)
    services = services_of(request)
    tenant_id = principal_of(request.scope).tenant_id
    if not await services.control.connections.delete(tenant_id, name):
        raise not_found(f"connection {name!r}")
    await services.rules_changed(tenant_id, None)
    return Response(status_code=204)


_NAME = {"name": f"the connection name, {NAME_RULE}"}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/connections",
        list_connections,
        "List connections (secrets hidden)",
        "connections",
        Scope.READ,
        responses={200: ConnectionList, **_ERRORS},
    ),
    Endpoint(
        "put",
        "/v1/connections/{name}",
        put_connection,
        "Create or replace a connection (basic, api_key, oauth_client_credentials)",
        "connections",
        Scope.ADMIN,
        request_body=ConnectionInput,
        responses={200: Connection, 201: Connection, 422: ErrorBody, **_ERRORS},
        path_params=_NAME,
    ),
    Endpoint(
        "get",
        "/v1/connections/{name}",
        get_connection,
        "Describe a connection",
        "connections",
        Scope.READ,
        responses={200: Connection, **_ERRORS},
        path_params=_NAME,
    ),
    Endpoint(
        "delete",
        "/v1/connections/{name}",
        delete_connection,
        "Delete a connection",
        "connections",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params=_NAME,
    ),
]
