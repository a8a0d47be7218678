"""Connections: `PUT|GET|DELETE /v1/connections/{name}` and `GET /v1/connections`.

A connection is reusable authorization for HTTP targets: `basic`, `api_key` (a header),
`api_key_query` (a query parameter) or `oauth_client_credentials`. Secrets are sealed at rest
and never shown again after they are saved; `GET` shows everything else.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, path_name, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.auth import Scope
from stellwerk.rules import ConnectionSpec
from stellwerk.service import Connection

# The handler passes the body on as it came (`Connections.put` checks it, naming the field at
# fault); the document shows the specs it is checked against, one per `type`.
ConnectionInput = ConnectionSpec


class ConnectionList(msgspec.Struct):
    connections: list[Connection]


def connection_name(request: Request) -> str:
    return path_name(request, "connection", "name")


async def put_connection(request: Request) -> Response:
    name = connection_name(request)
    body = await read_json(request, dict[str, Any])
    connections = platform_of(request).connections
    connection, created = await connections.put(principal_of(request.scope), name, body)
    return json_response(connection, 201 if created else 200)


async def get_connection(request: Request) -> Response:
    name = connection_name(request)
    connections = platform_of(request).connections
    return json_response(await connections.get(principal_of(request.scope), name))


async def list_connections(request: Request) -> Response:
    connections = await platform_of(request).connections.all(principal_of(request.scope))
    return json_response(ConnectionList(connections))


async def delete_connection(request: Request) -> Response:
    name = connection_name(request)
    await platform_of(request).connections.delete(principal_of(request.scope), name)
    return Response(status_code=204)


_NAME = {"name": name_param("the connection name")}
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
        "Create or replace a connection (basic, api_key, api_key_query, oauth_client_credentials)",
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
