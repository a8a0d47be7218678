"""EventBridge's global endpoints (CreateEndpoint, DescribeEndpoint, ListEndpoints,
UpdateEndpoint, DeleteEndpoint) over the sites capability's endpoints, which this package reaches
through `stellwerk.capability.GlobalEndpoints`: a region of EventBridge is a site here
(docs/eventbridge-api.md has the mapping both ways)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from stellwerk.awsapi import operations
from stellwerk.awsapi.errors import AwsError, not_found, validation
from stellwerk.awsapi.operations import Call, paginate
from stellwerk.awsapi.store import EndpointExtras
from stellwerk.capability import (
    GlobalEndpoint,
    GlobalEndpoints,
    GlobalEndpointSpec,
    ReplicationMode,
)
from stellwerk.service import NotFound

_NAME: Final = re.compile(r"^[.\-_A-Za-z0-9]{1,64}\Z")
_HEALTH_CHECK: Final = re.compile(r"^arn:aws([a-z]|\-)*:route53:::healthcheck/[\-a-z0-9]+\Z")
_ROLE: Final = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+\Z")
_ENDPOINT_ID: Final = re.compile(r"^[A-Za-z0-9\-]+\.[A-Za-z0-9\-]+\Z")
_REPLICATION_STATES: Final = ("ENABLED", "DISABLED")


def _facade(call: Call) -> GlobalEndpoints:
    found = call.facades.global_endpoints
    if found is None:
        raise validation("Global endpoints are not offered here: the sites capability is off.")
    return found


def endpoint_id(call: Call, name: str) -> str:
    """The endpoint's `EndpointId` (EventBridge's form, `<10>.<3>`): made from the tenant's
    name and the endpoint's, so it needs no record and is the same on every gateway and on
    both sites of the endpoint (sites name a tenant alike; its id is local to a site)."""
    return _digest_id(f"{call.principal.tenant}/{name}")


def _legacy_endpoint_id(call: Call, name: str) -> str:
    """The `EndpointId` handed out before it was made from the tenant's name: from the
    tenant's id, so it differed between the sites. Still taken where it was given out."""
    return _digest_id(f"{call.principal.tenant_id}/{name}")


def _digest_id(text: str) -> str:
    digest = base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().lower()
    return f"{digest[:10]}.{digest[10:13]}"


async def endpoint_by_id(call: Call, given: str) -> GlobalEndpoint:
    """The endpoint whose `EndpointId` is `given` (PutEvents' `EndpointId`)."""
    if not _ENDPOINT_ID.match(given):
        raise validation(f"EndpointId {given!r} is not an endpoint id (<letters>.<letters>).")
    for endpoint in await _facade(call).all(call.principal):
        if given in (endpoint_id(call, endpoint.name), _legacy_endpoint_id(call, endpoint.name)):
            return endpoint
    raise not_found(f"Endpoint with id {given} does not exist.")


async def put_events(call: Call) -> operations.Answered:
    """PutEvents, also sent to a global endpoint (`EndpointId`, which boto3 and the CLI sign
    with SigV4a unless told `signature_version="v4"`): the events are taken here, on the bus
    of the endpoint, and replicated to the other site as every event of a paired tenant is."""
    if call.params.get("EndpointId") is None:
        return await operations.put_events(call)
    endpoint = await endpoint_by_id(call, call.string("EndpointId"))
    return await operations.put_events(
        call, endpoint=endpoint.name, endpoint_buses=endpoint.spec.buses
    )


def _name(call: Call) -> str:
    name = call.string("Name", required=True)
    if not _NAME.match(name):
        raise validation(f"Name {name!r} must be 1-64 of A-Z, a-z, 0-9, '.', '-', '_'.")
    return name


@dataclass(frozen=True, slots=True)
class _Routing:
    health_check: str
    secondary: str


def _routing(call: Call) -> _Routing | None:
    given = call.params.get("RoutingConfig")
    if given is None:
        return None
    failover = given.get("FailoverConfig") if isinstance(given, dict) else None
    if not isinstance(failover, dict):
        raise validation("RoutingConfig.FailoverConfig is a required argument.")
    primary, secondary = failover.get("Primary"), failover.get("Secondary")
    health = primary.get("HealthCheck") if isinstance(primary, dict) else None
    route = secondary.get("Route") if isinstance(secondary, dict) else None
    if not isinstance(health, str) or not _HEALTH_CHECK.match(health):
        raise validation(
            "RoutingConfig.FailoverConfig.Primary.HealthCheck must be a Route 53 health check's "
            "ARN (arn:aws:route53:::healthcheck/<id>)."
        )
    if not isinstance(route, str) or not route:
        raise validation(
            "RoutingConfig.FailoverConfig.Secondary.Route must name the secondary region: "
            "here, the secondary site."
        )
    return _Routing(health, route)


def _event_buses(call: Call) -> tuple[str, tuple[str, str]] | None:
    """The bus's name and the two sites (the regions of the two ARNs), in the order given."""
    given = call.params.get("EventBuses")
    if given is None:
        return None
    if not isinstance(given, list) or len(given) != 2:
        raise validation(
            "EventBuses must have 2 members: the event bus in the primary and in the secondary."
        )
    names, sites = set(), []
    for index, member in enumerate(given):
        arn = member.get("EventBusArn") if isinstance(member, dict) else None
        parts = arn.split(":", 5) if isinstance(arn, str) else []
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "events"]:
            parts = []
        if not parts or not parts[5].startswith("event-bus/") or not parts[3]:
            raise validation(
                f"EventBuses[{index}].EventBusArn must be an event bus's ARN: "
                "arn:aws:events:<site>:<account>:event-bus/<name>."
            )
        if parts[4] != call.principal.tenant:
            raise validation(
                f"EventBuses[{index}].EventBusArn names account {parts[4]!r}; "
                f"this account is {call.principal.tenant!r}."
            )
        names.add(parts[5].removeprefix("event-bus/"))
        sites.append(parts[3])
    if len(names) != 1:
        raise validation("The two event buses of an endpoint must have the same name.")
    if sites[0] == sites[1]:
        raise validation("The two event buses of an endpoint must be in two regions (sites).")
    return names.pop(), (sites[0], sites[1])


def _replication(call: Call, before: ReplicationMode | None) -> ReplicationMode | None:
    given = call.params.get("ReplicationConfig")
    if given is None:
        return None
    state = given.get("State", "ENABLED") if isinstance(given, dict) else None
    if state not in _REPLICATION_STATES:
        raise validation(
            f"ReplicationConfig.State must be one of {', '.join(_REPLICATION_STATES)}."
        )
    if state == "DISABLED":
        return "off"
    return "sync" if before == "sync" else "async"  # ENABLED keeps a native endpoint's sync


def _extras(call: Call, before: EndpointExtras, routing: _Routing | None) -> EndpointExtras:
    description = call.string("Description", default=before.description)
    if len(description) > 512:
        raise validation("Description must be at most 512 characters.")
    role = call.string("RoleArn", default=before.role_arn)
    if role and not _ROLE.match(role):
        raise validation(
            "RoleArn must be an IAM role's ARN (arn:aws:iam::<12 digits>:role/<name>)."
        )
    health = routing.health_check if routing is not None else before.health_check
    return EndpointExtras(description, health, role)


def _spec(
    call: Call, routing: _Routing | None, before: GlobalEndpointSpec | None
) -> GlobalEndpointSpec:
    """The spec from what the call gives, and what the endpoint had for what it leaves out."""
    buses = _event_buses(call)
    replication = _replication(call, before.replication if before else None)
    if before is None and (routing is None or buses is None):
        raise validation("RoutingConfig and EventBuses are required arguments.")
    if buses is not None:
        bus, sites = buses
        bus_names: tuple[str, ...] = (bus,)
    else:
        assert before is not None
        bus_names, sites = before.buses, (before.primary, before.secondary)
    if routing is not None:
        secondary = routing.secondary
    elif before is not None and before.secondary in sites:
        secondary = before.secondary
    else:
        secondary = sites[1]
    if secondary not in sites:
        raise validation(
            f"RoutingConfig.FailoverConfig.Secondary.Route {secondary!r} is the region of "
            f"neither event bus ({sites[0]}, {sites[1]})."
        )
    primary = sites[0] if sites[1] == secondary else sites[1]
    if replication is None:
        replication = before.replication if before is not None else "async"
    return GlobalEndpointSpec(primary, secondary, bus_names, replication)


def endpoint_state(endpoint: GlobalEndpoint) -> tuple[str, str]:
    """EventBridge's `State` and `StateReason` of an endpoint. EventBridge's state is the
    resource's, not its health (that is the health check's): every failover state is
    `ACTIVE`, and the reason tells which one and which site takes the events."""
    spec = endpoint.spec
    if not endpoint.mirrored:
        other = spec.secondary if endpoint.site == spec.primary else spec.primary
        state = "CREATING" if endpoint.created_at == endpoint.updated_at else "UPDATING"
        return state, f"Site {other} does not have the endpoint as it is here yet."
    reason = f"{endpoint.state}: site {endpoint.active} takes the events"
    return "ACTIVE", f"{reason} ({endpoint.reason})." if endpoint.reason else f"{reason}."


def _shown(call: Call, endpoint: GlobalEndpoint, extras: EndpointExtras) -> dict[str, Any]:
    spec = endpoint.spec
    bus = spec.buses[0]  # one made natively with several buses shows its first
    primary: dict[str, str] = {"HealthCheck": extras.health_check} if extras.health_check else {}
    state, reason = endpoint_state(endpoint)
    shown: dict[str, Any] = {"Name": endpoint.name}
    if extras.description:
        shown["Description"] = extras.description
    shown |= {
        "Arn": call.arn(f"endpoint/{endpoint.name}"),
        "RoutingConfig": {
            "FailoverConfig": {"Primary": primary, "Secondary": {"Route": spec.secondary}}
        },
        "ReplicationConfig": {"State": "DISABLED" if spec.replication == "off" else "ENABLED"},
        "EventBuses": [
            {"EventBusArn": f"arn:aws:events:{site}:{call.principal.tenant}:event-bus/{bus}"}
            for site in (spec.primary, spec.secondary)
        ],
    }
    if extras.role_arn:
        shown["RoleArn"] = extras.role_arn
    shown |= {
        "EndpointId": endpoint_id(call, endpoint.name),
        "EndpointUrl": call.url,
        "State": state,
        "StateReason": reason,
        "CreationTime": endpoint.created_at.timestamp(),
        "LastModifiedTime": endpoint.updated_at.timestamp(),
    }
    return shown


_CHANGED_FIELDS: Final = (
    "Name",
    "Arn",
    "RoutingConfig",
    "ReplicationConfig",
    "EventBuses",
    "RoleArn",
    "State",
)


async def _existing(call: Call, name: str) -> GlobalEndpoint:
    try:
        return await _facade(call).get(call.principal, name)
    except NotFound:
        raise not_found(f"Endpoint {name} does not exist.") from None


async def _extras_of(call: Call, name: str) -> EndpointExtras:
    found = await call.store.endpoint_extras(call.principal.tenant_id)
    return found.get(name, EndpointExtras())


async def create_endpoint(call: Call) -> dict[str, Any]:
    name = _name(call)
    facade = _facade(call)
    with contextlib.suppress(NotFound):
        await facade.get(call.principal, name)
        raise AwsError("ResourceAlreadyExistsException", f"Endpoint {name} already exists.")
    routing = _routing(call)
    spec = _spec(call, routing, None)
    extras = _extras(call, EndpointExtras(), routing)
    endpoint, _ = await facade.put(call.principal, name, spec)
    await call.store.put_endpoint_extras(call.principal.tenant_id, name, extras)
    shown = _shown(call, endpoint, extras)
    return {field: shown[field] for field in _CHANGED_FIELDS if field in shown}


async def update_endpoint(call: Call) -> dict[str, Any]:
    name = _name(call)
    before = await _existing(call, name)
    routing = _routing(call)
    spec = _spec(call, routing, before.spec)
    extras = _extras(call, await _extras_of(call, name), routing)
    endpoint, _ = await _facade(call).put(call.principal, name, spec)
    await call.store.put_endpoint_extras(call.principal.tenant_id, name, extras)
    shown = _shown(call, endpoint, extras)
    fields = (*_CHANGED_FIELDS, "EndpointId", "EndpointUrl")
    return {field: shown[field] for field in fields if field in shown}


async def describe_endpoint(call: Call) -> dict[str, Any]:
    name = _name(call)
    return _shown(call, await _existing(call, name), await _extras_of(call, name))


async def list_endpoints(call: Call) -> dict[str, Any]:
    prefix = call.string("NamePrefix")
    found = [e for e in await _facade(call).all(call.principal) if e.name.startswith(prefix)]
    found.sort(key=lambda e: e.name)
    page, token = paginate(call, found, lambda e: e.name, limit_name="MaxResults")
    extras = await call.store.endpoint_extras(call.principal.tenant_id)
    answer: dict[str, Any] = {
        "Endpoints": [_shown(call, e, extras.get(e.name, EndpointExtras())) for e in page]
    }
    if token:
        answer["NextToken"] = token
    return answer


async def delete_endpoint(call: Call) -> dict[str, Any]:
    name = _name(call)
    try:
        await _facade(call).delete(call.principal, name)
    except NotFound:
        raise not_found(f"Endpoint {name} does not exist.") from None
    await call.store.delete_endpoint_extras(call.principal.tenant_id, name)
    return {}
