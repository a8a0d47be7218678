"""The admin API of sources: `/v1/sources/{name}`. Thin adapters over `Sources`; admin keys
change, read keys read, all of it in the caller's tenant."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import (
    Endpoint,
    ErrorBody,
    capability_of,
    json_response,
    name_param,
    path_name,
    principal_of,
    read_json,
)
from stellwerk.auth import Scope
from stellwerk.tracking.model import Source, SourceInput, SourceList
from stellwerk.tracking.opened import NAME, TrackingOpened
from stellwerk.tracking.sources import Sources

TAG = "tracking"


def sources_of(request: Request) -> Sources:
    return capability_of(request, NAME, TrackingOpened).sources


def source_name(request: Request) -> str:
    return path_name(request, "source", "name")


async def put_source(request: Request) -> Response:
    name = source_name(request)
    body = await read_json(request, SourceInput)
    source, created = await sources_of(request).put(principal_of(request.scope), name, body)
    return json_response(source, 201 if created else 200)


async def rotate_write_key(request: Request) -> Response:
    name = source_name(request)
    return json_response(await sources_of(request).rotate(principal_of(request.scope), name))


async def get_source(request: Request) -> Response:
    name = source_name(request)
    return json_response(await sources_of(request).get(principal_of(request.scope), name))


async def delete_source(request: Request) -> Response:
    name = source_name(request)
    await sources_of(request).delete(principal_of(request.scope), name)
    return Response(status_code=204)


async def list_sources(request: Request) -> Response:
    found = await sources_of(request).all(principal_of(request.scope))
    return json_response(SourceList(sources=found))


_NAME = {"name": name_param("the source's name")}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_WRITE: dict[int, type | None] = {**_READ, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/sources",
        list_sources,
        "List the tenant's tracking sources",
        TAG,
        Scope.READ,
        responses={200: SourceList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "put",
        "/v1/sources/{name}",
        put_source,
        "Create or replace a tracking source (a new one's write key is shown this once)",
        TAG,
        Scope.ADMIN,
        request_body=SourceInput,
        responses={200: Source, 201: Source, **_WRITE},
        path_params=_NAME,
    ),
    Endpoint(
        "get",
        "/v1/sources/{name}",
        get_source,
        "Describe a tracking source (never its write key)",
        TAG,
        Scope.READ,
        responses={200: Source, **_READ},
        path_params=_NAME,
    ),
    Endpoint(
        "post",
        "/v1/sources/{name}/write-key",
        rotate_write_key,
        "Give a tracking source a new write key (shown this once); the old one is refused",
        TAG,
        Scope.ADMIN,
        responses={200: Source, **_READ},
        path_params=_NAME,
    ),
    Endpoint(
        "delete",
        "/v1/sources/{name}",
        delete_source,
        "Delete a tracking source; its write key is refused from then on",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_NAME,
    ),
]
