"""Rules of a bus: `PUT|GET|DELETE /v1/buses/{bus}/rules/{rule}` and `GET /v1/buses/{bus}/rules`.

A rule is checked whole when it is saved (pattern, targets, transformers, URLs, connections), so
that nothing is found wrong when events flow. Changes take effect for events recorded after them,
without a restart. Target signing secrets are shown to admin keys only.
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
from stellwerk.rules import Rule, RuleInput


class RuleList(msgspec.Struct):
    rules: list[Rule]


def rule_name(request: Request) -> str:
    return path_name(request, "rule", "rule")


async def put_rule(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    body = await read_json(request, RuleInput)
    rules = platform_of(request).rules
    rule, created = await rules.put(principal_of(request.scope), bus, name, body)
    return json_response(rule, 201 if created else 200)


async def get_rule(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    rule = await platform_of(request).rules.get(principal_of(request.scope), bus, name)
    return json_response(rule)


async def list_rules(request: Request) -> Response:
    bus = bus_name(request)
    rules = await platform_of(request).rules.all(principal_of(request.scope), bus)
    return json_response(RuleList(rules=rules))


async def delete_rule(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    await platform_of(request).rules.delete(principal_of(request.scope), bus, name)
    return Response(status_code=204)


_PARAMS = {"bus": name_param("the bus name"), "rule": name_param("the rule name")}
_ERRORS: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/rules",
        list_rules,
        "List the rules of a bus",
        "rules",
        Scope.READ,
        responses={200: RuleList, **_ERRORS},
        path_params={"bus": name_param("the bus name")},
    ),
    Endpoint(
        "put",
        "/v1/buses/{bus}/rules/{rule}",
        put_rule,
        "Create or replace a rule (pattern, state, up to 10 targets)",
        "rules",
        Scope.ADMIN,
        request_body=RuleInput,
        responses={200: Rule, 201: Rule, 409: ErrorBody, 422: ErrorBody, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "get",
        "/v1/buses/{bus}/rules/{rule}",
        get_rule,
        "Describe a rule (target secrets shown to admin keys only)",
        "rules",
        Scope.READ,
        responses={200: Rule, **_ERRORS},
        path_params=_PARAMS,
    ),
    Endpoint(
        "delete",
        "/v1/buses/{bus}/rules/{rule}",
        delete_rule,
        "Delete a rule",
        "rules",
        Scope.ADMIN,
        responses={204: None, **_ERRORS},
        path_params=_PARAMS,
    ),
]
