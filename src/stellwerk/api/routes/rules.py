"""Rules of a bus: `PUT|GET|DELETE /v1/buses/{bus}/rules/{rule}` and `GET /v1/buses/{bus}/rules`.

A rule is checked whole when it is saved (pattern, targets, transformers, URLs, connections), so
that nothing is found wrong when events flow. Changes take effect for events recorded after them,
without a restart. Target signing secrets are shown to admin keys only.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response, read_json
from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.names import NAME_RULE, InvalidNameError, check_name
from stellwerk.rules import InvalidRuleError, Rule, RuleInput, validate_rule
from stellwerk.services import Services
from stellwerk.storage.control import ConflictError


class RuleList(msgspec.Struct):
    rules: list[Rule]


def rule_name(request: Request) -> str:
    name: str = request.path_params["rule"]
    try:
        return check_name("rule", name)
    except InvalidNameError as exc:
        raise ApiError(400, "InvalidRequest", str(exc), field="rule") from None


def _shown(rule: Rule, scope: Scope) -> Rule:
    if scope is Scope.ADMIN:
        return rule
    hidden = [msgspec.structs.replace(t, secret=None) for t in rule.targets]
    return msgspec.structs.replace(rule, targets=hidden)


async def _bus_or_404(services: Services, tenant_id: str, name: str) -> None:
    if await services.control.get_bus(tenant_id, name) is None:
        raise not_found(f"bus {name!r}")


async def put_rule(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    body = await read_json(request, RuleInput)
    services = services_of(request)
    principal = principal_of(request.scope)
    await _bus_or_404(services, principal.tenant_id, bus)
    try:
        validate_rule(body)
        body = await services.targets.prepare(principal, body)
    except InvalidRuleError as exc:
        raise ApiError(400, exc.error, str(exc), field=exc.field) from None
    try:
        rule, created = await services.control.rules.put(
            principal.tenant_id, bus, name, body, max_rules=services.settings.max_rules_per_bus
        )
    except ConflictError as exc:
        raise ApiError(409, "LimitExceeded", str(exc)) from None
    await services.rules_changed(principal.tenant_id, bus)
    return json_response(rule, 201 if created else 200)


async def get_rule(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    principal = principal_of(request.scope)
    rule = await services_of(request).control.rules.get(principal.tenant_id, bus, name)
    if rule is None:
        raise not_found(f"rule {name!r} on bus {bus!r}")
    return json_response(_shown(rule, principal.scope))


async def list_rules(request: Request) -> Response:
    bus = bus_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    await _bus_or_404(services, principal.tenant_id, bus)
    rules = await services.control.rules.for_bus(principal.tenant_id, bus)
    return json_response(RuleList(rules=[_shown(r, principal.scope) for r in rules]))


async def delete_rule(request: Request) -> Response:
    bus = bus_name(request)
    name = rule_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    if not await services.control.rules.delete(principal.tenant_id, bus, name):
        raise not_found(f"rule {name!r} on bus {bus!r}")
    await services.rules_changed(principal.tenant_id, bus)
    return Response(status_code=204)


_PARAMS = {"bus": "the bus name", "rule": f"the rule name, {NAME_RULE}"}
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
        path_params={"bus": "the bus name"},
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
