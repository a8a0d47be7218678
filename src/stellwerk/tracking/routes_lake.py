"""`POST /v1/lake/query`: SQL over the caller's own part of the lake (read keys)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import Endpoint, ErrorBody, capability_of, json_response, principal_of, read_json
from stellwerk.auth import Scope
from stellwerk.service import Unavailable
from stellwerk.tracking.lake_model import MAX_SQL_CHARS, QueryResult
from stellwerk.tracking.opened import NAME, TrackingOpened

TAG = "tracking"


class LakeQueryInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One read-only SELECT over the view `events`."""

    sql: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SQL_CHARS)]


async def query_lake(request: Request) -> Response:
    body = await read_json(request, LakeQueryInput)
    lake = capability_of(request, NAME, TrackingOpened).lake
    if lake is None:
        raise Unavailable(
            "the lake needs DuckDB: install Stellwerk with the lake extra (stellwerk[lake])",
            code="LakeNotInstalled",
        )
    principal = principal_of(request.scope)
    return json_response(await lake.query.run(principal.tenant, body.sql))


ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/lake/query",
        query_lake,
        "Answer one SELECT over the view `events`: the tenant's lake rows (at most 10,000)",
        TAG,
        Scope.READ,
        request_body=LakeQueryInput,
        responses={
            200: QueryResult,
            400: ErrorBody,
            401: ErrorBody,
            403: ErrorBody,
            415: ErrorBody,
            422: ErrorBody,
        },
    ),
]
