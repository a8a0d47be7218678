"""The sites API: `/v1/peers/{site}` for a tenant's admins, and the signed intake of a peer's
replicated events (`POST /v1/peers/{site}/events`, no key: the pair's signature instead)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import (
    Endpoint,
    ErrorBody,
    Parameter,
    capability_of,
    json_response,
    name_param,
    path_name,
    principal_of,
    read_json,
)
from stellwerk.auth import Principal, Scope
from stellwerk.config import SITE_RULE
from stellwerk.service import Conflict, Unauthorized
from stellwerk.sites.mirror import ControlSnapshot, Mirrored, take_snapshot
from stellwerk.sites.model import (
    Endpoint as EndpointView,
)
from stellwerk.sites.model import (
    EndpointInput,
    EndpointList,
    EndpointState,
    Peer,
    PeerInput,
    PeerList,
    ReplicaBatch,
    Replicated,
    Routed,
)
from stellwerk.sites.opened import NAME, SitesOpened
from stellwerk.sites.peers import site_name
from stellwerk.sites.replication import take_replicas
from stellwerk.sites.rules import RulesMirrored, RuleSnapshot, take_rules
from stellwerk.sites.store import PeerRecord

TAG = "sites"


def sites_of(request: Request) -> SitesOpened:
    return capability_of(request, NAME, SitesOpened)


async def put_peer(request: Request) -> Response:
    site = site_name(request.path_params["site"])
    body = await read_json(request, PeerInput)
    peer, created = await sites_of(request).peers.put(principal_of(request.scope), site, body)
    return json_response(peer, 201 if created else 200)


async def get_peer(request: Request) -> Response:
    site = request.path_params["site"]
    return json_response(await sites_of(request).peers.get(principal_of(request.scope), site))


async def list_peers(request: Request) -> Response:
    peers = await sites_of(request).peers.all(principal_of(request.scope))
    return json_response(PeerList(peers=peers))


async def delete_peer(request: Request) -> Response:
    site = request.path_params["site"]
    await sites_of(request).peers.delete(principal_of(request.scope), site)
    return Response(status_code=204)


async def from_peer(request: Request) -> tuple[SitesOpened, Principal, str, bytes]:
    """A signed request of a peer site: the capability, the tenant, the site and the body."""
    sites = sites_of(request)
    body = await request.body()
    principal, record = await sites.peers.authenticate(
        request.headers, request.method, request.url.path, body
    )
    check_sender(principal, record, request.path_params["site"], request.url.path)
    return sites, principal, record.site, body


def check_sender(principal: Principal, record: PeerRecord, named: str, path: str) -> None:
    """Refuse a signed peer request whose path names another site than its signature, or, but
    for the first snapshot (`/mirror`), one of a tenant whose pairing has not settled."""
    site = record.site
    if site != named:
        raise Unauthorized("peer request refused: the path names another site than the signature")
    if not path.endswith("/mirror"):
        # Nothing of the tenant is taken before the first snapshot settled it (`mirror.py`).
        if record.tenant_state == "conflict":
            raise Conflict(record.tenant_detail or f"tenant {principal.tenant!r} conflicts")
        if record.tenant_state == "pending":
            raise Conflict(
                f"the pairing of tenant {principal.tenant!r} with site {site!r} is not settled "
                "yet: its keys and buses come first"
            )


async def receive_events(request: Request) -> Response:
    sites, principal, site, body = await from_peer(request)
    return json_response(await take_replicas(sites.platform, principal, site, body))


async def receive_mirror(request: Request) -> Response:
    sites, principal, site, body = await from_peer(request)
    record = await sites.peers.record(principal, site)
    if record is None:  # unpaired since the signature was checked
        raise Unauthorized(
            f"peer request refused: tenant {principal.tenant!r} has no peer {site!r}"
        )
    secret = sites.peers.secret(principal, record)
    return json_response(
        await take_snapshot(sites.platform, sites.store, principal, site, sites.site, body, secret)
    )


async def receive_endpoint(request: Request) -> Response:
    sites, principal, site, body = await from_peer(request)
    name = endpoint_name(request)
    await sites.endpoints.take_spec(principal, site, name, body)
    return Response(status_code=204)


async def receive_endpoint_state(request: Request) -> Response:
    sites, principal, site, body = await from_peer(request)
    name = endpoint_name(request)
    await sites.endpoints.take_state(principal, site, name, body)
    return Response(status_code=204)


async def receive_routed(request: Request) -> Response:
    sites, principal, site, body = await from_peer(request)
    await sites.endpoints.take_routed(principal, site, body)
    return Response(status_code=204)


async def receive_rules(request: Request) -> Response:
    sites, principal, site, body = await from_peer(request)
    return json_response(
        await take_rules(sites.platform, sites.store, principal, site, sites.site, body)
    )


def endpoint_name(request: Request) -> str:
    return path_name(request, "endpoint", "name")


async def put_endpoint(request: Request) -> Response:
    name = endpoint_name(request)
    body = await read_json(request, EndpointInput)
    endpoints = sites_of(request).endpoints
    endpoint, created = await endpoints.put(principal_of(request.scope), name, body)
    return json_response(endpoint, 201 if created else 200)


async def get_endpoint(request: Request) -> Response:
    name = endpoint_name(request)
    return json_response(await sites_of(request).endpoints.get(principal_of(request.scope), name))


async def list_endpoints(request: Request) -> Response:
    found = await sites_of(request).endpoints.all(principal_of(request.scope))
    return json_response(EndpointList(endpoints=found))


async def delete_endpoint(request: Request) -> Response:
    name = endpoint_name(request)
    await sites_of(request).endpoints.delete(principal_of(request.scope), name)
    return Response(status_code=204)


SiteName = Annotated[str, msgspec.Meta(pattern=f"^{SITE_RULE}$")]
_SITE = {"site": Parameter(f"the peer site's name, {SITE_RULE}", SiteName)}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_NAME = {"name": name_param("the endpoint's name")}
_PEER_ENDPOINT = {**_SITE, **_NAME}
_FROM_PEER: dict[int, type | None] = {
    204: None,
    400: ErrorBody,
    401: ErrorBody,
    404: ErrorBody,
}

ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/peers",
        list_peers,
        "List the tenant's peer sites and what each has replicated",
        TAG,
        Scope.READ,
        responses={200: PeerList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "put",
        "/v1/peers/{site}",
        put_peer,
        "Pair the tenant with a peer site: its URL and the secret both sites share",
        TAG,
        Scope.ADMIN,
        request_body=PeerInput,
        responses={200: Peer, 201: Peer, **_READ, 415: ErrorBody, 422: ErrorBody},
        path_params=_SITE,
    ),
    Endpoint(
        "get",
        "/v1/peers/{site}",
        get_peer,
        "Describe a peer site: what is mirrored and what is pending, the lag per bus",
        TAG,
        Scope.READ,
        responses={200: Peer, **_READ},
        path_params=_SITE,
    ),
    Endpoint(
        "delete",
        "/v1/peers/{site}",
        delete_peer,
        "Unpair a peer site (replication to it stops)",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_SITE,
    ),
    Endpoint(
        "post",
        "/v1/peers/{site}/events",
        receive_events,
        "Take a peer site's replicated events (signed with the pair's secret, no key)",
        TAG,
        None,
        request_body=ReplicaBatch,
        responses={200: Replicated, 400: ErrorBody, 401: ErrorBody, 404: ErrorBody},
        path_params=_SITE,
    ),
    Endpoint(
        "put",
        "/v1/peers/{site}/mirror",
        receive_mirror,
        "Take a peer site's keys (digests) and buses (signed with the pair's secret, no key)",
        TAG,
        None,
        request_body=ControlSnapshot,
        responses={200: Mirrored, 400: ErrorBody, 401: ErrorBody},
        path_params=_SITE,
    ),
    Endpoint(
        "put",
        "/v1/peers/{site}/endpoints/{name}",
        receive_endpoint,
        "Take an endpoint PUT on a peer site (signed with the pair's secret, no key)",
        TAG,
        None,
        request_body=EndpointInput,
        responses=_FROM_PEER,
        path_params=_PEER_ENDPOINT,
    ),
    Endpoint(
        "put",
        "/v1/peers/{site}/endpoints/{name}/state",
        receive_endpoint_state,
        "Take an endpoint's state from its secondary site (signed with the pair's secret)",
        TAG,
        None,
        request_body=EndpointState,
        responses=_FROM_PEER,
        path_params=_PEER_ENDPOINT,
    ),
    Endpoint(
        "put",
        "/v1/peers/{site}/routed",
        receive_routed,
        "Take how far a peer site, active for an endpoint, has routed its buses (signed)",
        TAG,
        None,
        request_body=Routed,
        responses=_FROM_PEER,
        path_params=_SITE,
    ),
    Endpoint(
        "put",
        "/v1/peers/{site}/rules",
        receive_rules,
        "Take the rules of the buses of endpoints the peer site is active for (signed)",
        TAG,
        None,
        request_body=RuleSnapshot,
        responses={200: RulesMirrored, 400: ErrorBody, 401: ErrorBody, 409: ErrorBody},
        path_params=_SITE,
    ),
    Endpoint(
        "get",
        "/v1/endpoints",
        list_endpoints,
        "List the tenant's global endpoints as this site sees them",
        TAG,
        Scope.READ,
        responses={200: EndpointList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "put",
        "/v1/endpoints/{name}",
        put_endpoint,
        "Create or change a global endpoint (its spec goes to the other site too)",
        TAG,
        Scope.ADMIN,
        request_body=EndpointInput,
        responses={200: EndpointView, 201: EndpointView, **_READ, 415: ErrorBody, 422: ErrorBody},
        path_params=_NAME,
    ),
    Endpoint(
        "get",
        "/v1/endpoints/{name}",
        get_endpoint,
        "An endpoint's state, active site, replication lag and transitions",
        TAG,
        Scope.READ,
        responses={200: EndpointView, **_READ},
        path_params=_NAME,
    ),
    Endpoint(
        "get",
        "/v1/endpoints/{name}/state",
        get_endpoint,
        "The same, for producers' ingest keys: where to send (the client, the edge proxy)",
        TAG,
        Scope.INGEST,
        responses={200: EndpointView, **_READ},
        path_params=_NAME,
    ),
    Endpoint(
        "delete",
        "/v1/endpoints/{name}",
        delete_endpoint,
        "Delete a global endpoint on this site",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_NAME,
    ),
]
