"""Replays: `POST /v1/replays`, `GET /v1/replays[/{name}]`, `DELETE /v1/replays/{name}` (cancel).

What is checked before a replay is recorded, and how it runs, is the service layer's
(`stellwerk.service.Replays`); `GET` shows its state and progress.
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
from stellwerk.auth import Scope
from stellwerk.service import Replay, ReplayInput


class ReplayList(msgspec.Struct):
    replays: list[Replay]


async def start_replay(request: Request) -> Response:
    body = await read_json(request, ReplayInput)
    replay = await platform_of(request).replays.start(principal_of(request.scope), body)
    return json_response(replay, 201)


async def get_replay(request: Request) -> Response:
    name = path_name(request, "replay", "name")
    return json_response(await platform_of(request).replays.get(principal_of(request.scope), name))


async def list_replays(request: Request) -> Response:
    state = request.query_params.get("state")
    replays = await platform_of(request).replays.all(principal_of(request.scope), state)
    return json_response(ReplayList(replays))


async def cancel_replay(request: Request) -> Response:
    name = path_name(request, "replay", "name")
    return json_response(
        await platform_of(request).replays.cancel(principal_of(request.scope), name)
    )


_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}
_NAME = {"name": name_param("the replay name")}

ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/replays",
        start_replay,
        "Replay a time window of an archive to the rules of its bus (all, or those named)",
        "replays",
        Scope.ADMIN,
        request_body=ReplayInput,
        responses={201: Replay, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/replays",
        list_replays,
        "List the tenant's replays, newest first (filter: state)",
        "replays",
        Scope.READ,
        responses={200: ReplayList, **_ERRORS},
    ),
    Endpoint(
        "get",
        "/v1/replays/{name}",
        get_replay,
        "A replay's state and progress (replayed of total)",
        "replays",
        Scope.READ,
        responses={200: Replay, 404: ErrorBody, **_ERRORS},
        path_params=_NAME,
    ),
    Endpoint(
        "delete",
        "/v1/replays/{name}",
        cancel_replay,
        "Cancel a queued or running replay (deliveries already queued still go out)",
        "replays",
        Scope.ADMIN,
        responses={200: Replay, 404: ErrorBody, 409: ErrorBody, **_ERRORS},
        path_params=_NAME,
    ),
]
