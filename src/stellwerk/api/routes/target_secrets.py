"""Signing-secret rotation of an HTTP target:
`POST /v1/buses/{bus}/rules/{rule}/targets/{target}/rotate-secret`.

The new secret signs from now on; the old one keeps signing beside it for `grace_seconds`
(default a day), so receivers can switch at their own pace (see `rules.signing`). Saving the rule
without `secret` keeps the secret it has: this endpoint is the one way to change it gently.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, path_name, read_json
from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.api.routes.rules import rule_name
from stellwerk.auth import Scope
from stellwerk.rules import DEFAULT_SECRET_GRACE, MAX_SECRET_GRACE, Rule

_MAX_GRACE = int(MAX_SECRET_GRACE.total_seconds())


class RotateSecretInput(msgspec.Struct, forbid_unknown_fields=True):
    """`secret`: the new one (`whsec_...`; generated when omitted). `grace_seconds`: how long the
    current one keeps signing beside it (0..604800; 0: it stops at once)."""

    secret: str | None = None
    # Bounded here too, not only by the rotation: the document must say so, and a number beyond
    # a C int would not even become a timedelta.
    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=_MAX_GRACE)] = int(
        DEFAULT_SECRET_GRACE.total_seconds()
    )


async def rotate_secret(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    target = path_name(request, "target", "target")
    body = await read_json(request, RotateSecretInput, empty=RotateSecretInput())
    rule = await platform_of(request).rules.rotate_secret(
        principal_of(request.scope),
        bus,
        name,
        target,
        secret=body.secret,
        grace=timedelta(seconds=body.grace_seconds),
    )
    return json_response(rule)


ENDPOINTS = [
    Endpoint(
        "post",
        "/v1/buses/{bus}/rules/{rule}/targets/{target}/rotate-secret",
        rotate_secret,
        "Give an HTTP target a new signing secret; the old one signs too for a grace period",
        "rules",
        Scope.ADMIN,
        request_body=RotateSecretInput,
        request_body_required=False,
        responses={
            200: Rule,
            400: ErrorBody,
            401: ErrorBody,
            403: ErrorBody,
            404: ErrorBody,
            422: ErrorBody,
        },
        path_params={
            "bus": name_param("the bus name"),
            "rule": name_param("the rule name"),
            "target": name_param("the target id"),
        },
    ),
]
