"""API keys of the caller's tenant: create (shown once), list (never the secret), revoke."""

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
from stellwerk.seams import Change
from stellwerk.storage.control import ApiKeyRecord, NotFoundError


class KeyInput(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["ingest", "read", "admin"]
    description: str = ""


class KeyInfo(msgspec.Struct):
    id: str
    scope: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


class CreatedKey(msgspec.Struct):
    """A new key. `key` is shown this once and is not stored anywhere."""

    id: str
    key: str
    scope: str
    description: str
    created_at: datetime


class KeyList(msgspec.Struct):
    keys: list[KeyInfo]


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(
        id=record.id,
        scope=str(record.scope),
        description=record.description,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
    )


async def create_key(request: Request) -> Response:
    body = await read_json(request, KeyInput)
    if len(body.description) > 256:
        raise ApiError(
            422,
            "ValidationFailed",
            "description is longer than 256 characters",
            field="$.description",
        )
    services = services_of(request)
    record, key = await services.control.create_key(
        principal_of(request.scope).tenant_id, Scope(body.scope), body.description
    )
    created = CreatedKey(
        id=record.id,
        key=key,
        scope=body.scope,
        description=record.description,
        created_at=record.created_at,
    )
    return json_response(created, 201)


async def list_keys(request: Request) -> Response:
    records = await services_of(request).control.list_keys(principal_of(request.scope).tenant_id)
    return json_response(KeyList(keys=[_info(r) for r in records]))


async def revoke_key(request: Request) -> Response:
    key_id: str = request.path_params["key_id"]
    services = services_of(request)
    try:
        record = await services.control.revoke_key(principal_of(request.scope).tenant_id, key_id)
    except NotFoundError:
        raise not_found(f"key {key_id!r}") from None
    await services.changed(Change("key", record.tenant_id, name=key_id))
    return json_response(_info(record))


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
