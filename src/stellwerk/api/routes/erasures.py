"""Erasures: `POST /v1/erasures`, `GET /v1/erasures[/{id}]` (admin keys only).

What an erasure deletes and how is the service layer's (`stellwerk.service.Erasures`); see
docs/erasure.md.
"""

from __future__ import annotations

from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, query_int, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.auth import Scope
from stellwerk.service import Erasure, ErasureInput, ErasureRequest

MAX_PAGE: Final = 500


class ErasureList(msgspec.Struct):
    erasures: list[Erasure]
    next_before: str | None


async def request_erasure(request: Request) -> Response:
    body = await read_json(request, ErasureInput)
    erasure = await platform_of(request).erasures.request(principal_of(request.scope), body)
    return json_response(erasure, 202, headers={"Location": f"/v1/erasures/{erasure.id}"})


async def get_erasure(request: Request) -> Response:
    erasure_id: str = request.path_params["id"]
    erasures = platform_of(request).erasures
    return json_response(await erasures.get(principal_of(request.scope), erasure_id))


async def list_erasures(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    erasures = await platform_of(request).erasures.recent(
        principal_of(request.scope), request.query_params.get("before"), limit
    )
    next_before = erasures[-1].id if len(erasures) == limit else None
    return json_response(ErasureList(erasures, next_before))


_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/erasures",
        request_erasure,
        "Erase a person's data: events with a subject, or with a value at a field path",
        "erasures",
        Scope.ADMIN,
        request_body=ErasureRequest,
        responses={202: Erasure, 404: ErrorBody, 415: ErrorBody, 422: ErrorBody, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/erasures",
        list_erasures,
        "The tenant's erasures, newest first (page: before, limit)",
        "erasures",
        Scope.ADMIN,
        responses={200: ErasureList, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/erasures/{id}",
        get_erasure,
        "An erasure's audit entry: state and counts per store",
        "erasures",
        Scope.ADMIN,
        responses={200: Erasure, 404: ErrorBody, **_ERRORS},
        path_params={"id": "the erasure's id"},
    ),
]
