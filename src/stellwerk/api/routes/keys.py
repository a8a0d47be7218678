"""API keys of the caller's tenant: create (shown once), list (never the secret), revoke."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.auth import Scope
from stellwerk.service import CreatedKey, KeyInfo, KeyInput


class KeyList(msgspec.Struct):
    keys: list[KeyInfo]


async def create_key(request: Request) -> Response:
    body = await read_json(request, KeyInput)
    tenant_id = principal_of(request.scope).tenant_id
    return json_response(await platform_of(request).keys.create(tenant_id, body), 201)


async def list_keys(request: Request) -> Response:
    tenant_id = principal_of(request.scope).tenant_id
    return json_response(KeyList(keys=await platform_of(request).keys.all(tenant_id)))


async def revoke_key(request: Request) -> Response:
    key_id: str = request.path_params["key_id"]
    tenant_id = principal_of(request.scope).tenant_id
    return json_response(await platform_of(request).keys.revoke(tenant_id, key_id))


ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/keys",
        create_key,
        "Create an API key (the key is shown once)",
        "keys",
        Scope.ADMIN,
        request_body=KeyInput,
        responses={201: CreatedKey, 401: ErrorBody, 403: ErrorBody, 415: ErrorBody, 422: ErrorBody},
    ),
    Endpoint(
        "get",
        "/v1/keys",
        list_keys,
        "List the tenant's API keys",
        "keys",
        Scope.ADMIN,
        responses={200: KeyList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "delete",
        "/v1/keys/{key_id}",
        revoke_key,
        "Revoke an API key",
        "keys",
        Scope.ADMIN,
        responses={200: KeyInfo, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody},
        path_params={"key_id": "the key's public id (the part after swk_)"},
    ),
]
