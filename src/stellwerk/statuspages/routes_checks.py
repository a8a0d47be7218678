"""The synthetic checks' admin API: `/v1/checks/{name}` and their results."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import msgspec
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
from stellwerk.clock import utc_now
from stellwerk.events import parse_rfc3339
from stellwerk.service import InvalidRequest
from stellwerk.statuspages.check_store import Check, CheckInput, CheckResult
from stellwerk.statuspages.checks import Checks
from stellwerk.statuspages.opened import NAME, StatusPagesOpened

TAG = "checks"
MAX_RESULTS = 1_000


class CheckList(msgspec.Struct):
    checks: list[Check]


class ResultList(msgspec.Struct):
    results: list[CheckResult]


def checks_of(request: Request) -> Checks:
    return capability_of(request, NAME, StatusPagesOpened).checks


def check_name(request: Request) -> str:
    return path_name(request, "check", "name")


async def put_check(request: Request) -> Response:
    name = check_name(request)
    body = await read_json(request, CheckInput)
    check, created = await checks_of(request).put(principal_of(request.scope), name, body)
    return json_response(check, 201 if created else 200)


async def get_check(request: Request) -> Response:
    name = check_name(request)
    return json_response(await checks_of(request).get(principal_of(request.scope), name))


async def delete_check(request: Request) -> Response:
    name = check_name(request)
    await checks_of(request).delete(principal_of(request.scope), name)
    return Response(status_code=204)


async def list_checks(request: Request) -> Response:
    found = await checks_of(request).all(principal_of(request.scope))
    return json_response(CheckList(checks=found))


async def check_results(request: Request) -> Response:
    name = check_name(request)
    since_text = request.query_params.get("since")
    try:
        since = parse_rfc3339(since_text) if since_text else utc_now() - timedelta(days=1)
    except ValueError:
        raise InvalidRequest(
            f"since {since_text!r} is not an RFC 3339 time", field="since"
        ) from None
    limit_text = request.query_params.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_RESULTS:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_RESULTS}", field="limit")
    results = await checks_of(request).results(
        principal_of(request.scope), name, since, int(limit_text)
    )
    return json_response(ResultList(results=results))


# `page` and `component` go together (the service checks it; the struct's schema cannot say it).
_BOTH_OR_NEITHER = msgspec.Meta(
    extra_json_schema={
        "anyOf": [
            {
                "required": ["page", "component"],
                "properties": {"page": {"type": "string"}, "component": {"type": "string"}},
            },
            {"properties": {"page": {"type": "null"}, "component": {"type": "null"}}},
        ]
    }
)
_NAME = {"name": name_param("the check's name")}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_WRITE: dict[int, type | None] = {**_READ, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/checks",
        list_checks,
        "List the tenant's synthetic checks",
        TAG,
        Scope.READ,
        responses={200: CheckList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "put",
        "/v1/checks/{name}",
        put_check,
        "Create or update a synthetic check",
        TAG,
        Scope.ADMIN,
        request_body=Annotated[CheckInput, _BOTH_OR_NEITHER],
        responses={200: Check, 201: Check, **_WRITE},
        path_params=_NAME,
    ),
    Endpoint(
        "get",
        "/v1/checks/{name}",
        get_check,
        "Describe a check and its state",
        TAG,
        Scope.READ,
        responses={200: Check, **_READ},
        path_params=_NAME,
    ),
    Endpoint(
        "delete",
        "/v1/checks/{name}",
        delete_check,
        "Delete a check and its results",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_NAME,
    ),
    Endpoint(
        "get",
        "/v1/checks/{name}/results",
        check_results,
        "A check's results, newest first (query: since, RFC 3339; limit)",
        TAG,
        Scope.READ,
        responses={200: ResultList, **_READ},
        path_params=_NAME,
    ),
]
