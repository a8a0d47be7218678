"""Archives of a bus: `PUT|GET|DELETE /v1/buses/{bus}/archives/{name}`, `GET .../archives`.

The use cases (pausing the archiver, waiting for it to take a new archive in) are the service
layer's (`stellwerk.service.Archives`); see docs/archives.md.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, path_name, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.service import MAX_ARCHIVES_PER_BUS, Archive, ArchiveInput


class ArchiveList(msgspec.Struct):
    archives: list[Archive]


def archive_name(request: Request) -> str:
    return path_name(request, "archive", "name")


async def put_archive(request: Request) -> Response:
    bus = bus_name(request)
    name = archive_name(request)
    body = await read_json(request, ArchiveInput, empty=ArchiveInput())
    archives = platform_of(request).archives
    archive, created = await archives.put(principal_of(request.scope), bus, name, body)
    return json_response(archive, 201 if created else 200)


async def get_archive(request: Request) -> Response:
    bus = bus_name(request)
    name = archive_name(request)
    archive = await platform_of(request).archives.get(principal_of(request.scope), bus, name)
    return json_response(archive)


async def list_archives(request: Request) -> Response:
    bus = bus_name(request)
    archives = await platform_of(request).archives.all(principal_of(request.scope), bus)
    return json_response(ArchiveList(archives=archives))


async def delete_archive(request: Request) -> Response:
    bus = bus_name(request)
    name = archive_name(request)
    await platform_of(request).archives.delete(principal_of(request.scope), bus, name)
    return Response(status_code=204)


_PARAMS = {"bus": name_param("the bus name"), "name": name_param("the archive name")}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/archives",
        list_archives,
        "List the archives of a bus, with their event counts and sizes",
        "archives",
        Scope.READ,
        responses={200: ArchiveList, **_ERRORS},
        path_params={"bus": name_param("the bus name")},
    ),
    Endpoint(
        "put",
        "/v1/buses/{bus}/archives/{name}",
        put_archive,
        f"Create or update an archive (pattern, retention; up to {MAX_ARCHIVES_PER_BUS} per bus)",
        "archives",
        Scope.ADMIN,
        request_body=ArchiveInput,
        request_body_required=False,
        responses={200: Archive, 201: Archive, 409: ErrorBody, 422: ErrorBody, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "get",
        "/v1/buses/{bus}/archives/{name}",
        get_archive,
        "Describe an archive: pattern, retention, state, events and bytes held",
        "archives",
        Scope.READ,
        responses={200: Archive, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/archives/{name}",
        delete_archive,
        "Delete an archive and the events it holds",
        "archives",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params=_PARAMS,
    ),
]
