"""A peer's replicated events (`POST /v1/peers/{site}/events`) answered ahead of Starlette's
layers and routing (`Capability.fast_path`): synchronous replication sends one such request per
local group, and the ingest request waits for its answer; the layers cost about 150 µs of it
(docs/global-endpoints.md, "sites8"). Answered as the route answers, errors included."""

from __future__ import annotations

from typing import Final

import msgspec
from starlette.types import Receive, Scope

from stellwerk.api import (
    Answer,
    Answerer,
    ClientGone,
    Deferred,
    answer_to,
    check_declared,
    too_large,
    whole_body,
)
from stellwerk.capability import Opened
from stellwerk.sites.opened import SitesOpened
from stellwerk.sites.replication import take_replicas
from stellwerk.sites.routes import check_sender

ROUTE: Final = "/v1/peers/{site}/events"
_PREFIX: Final = "/v1/peers/"
_SUFFIX: Final = "/events"
_JSON: Final = (b"content-type", b"application/json")
_encode: Final = msgspec.json.Encoder().encode


def fast_path(opened: Opened) -> Answerer:
    """The capability's `Capability.fast_path`: only `POST /v1/peers/{site}/events`; anything
    else is left to the app at the cost of a few comparisons."""
    assert isinstance(opened, SitesOpened)
    sites = opened

    def answerer(scope: Scope) -> Deferred | None:
        path: str = scope["path"]
        if (
            scope["method"] != "POST"
            or not path.endswith(_SUFFIX)
            or not path.startswith(_PREFIX)
            or scope.get("root_path")
        ):
            return None
        site = path[len(_PREFIX) : -len(_SUFFIX)]
        if not site or "/" in site:
            return None  # not this route: the app says what it is
        return Deferred(ROUTE, lambda receive: _respond(sites, scope, site, receive))

    return answerer


async def _respond(sites: SitesOpened, scope: Scope, site: str, receive: Receive) -> Answer:
    path: str = scope["path"]
    try:
        check_declared(scope["headers"], sites.max_body)
        body = await whole_body(receive, sites.max_body, too_large)
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:  # the first of each, as Starlette's `Headers.get`
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        principal, record = await sites.peers.authenticate(headers, "POST", path, body)
        check_sender(principal, record, site, path)
        replicated = await take_replicas(sites.platform, principal, record.site, body)
        return _answer(200, [], _encode(replicated))
    except ClientGone:
        return Answer(ROUTE, 400, ((b"content-length", b"0"),))  # no one is there to read it
    except Exception as exc:
        error = answer_to(exc, "POST", path)
        extra = [  # WWW-Authenticate, Retry-After
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in error.headers.items()
        ]
        return _answer(error.status, extra, _encode(error.body()))


def _answer(status: int, extra: list[tuple[bytes, bytes]], body: bytes) -> Answer:
    return Answer(ROUTE, status, [(b"content-length", b"%d" % len(body)), _JSON, *extra], body)
