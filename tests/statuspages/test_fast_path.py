"""The status pages' fast path answers a fresh public page exactly as its route would (status,
headers, body, 304, the HTTP and cache metrics), and leaves everything else to the route: a
first reader, a stale entry, a query string, a page that is not public even when L1 has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send
from tests.api.test_metrics_middleware import requests_total
from tests.conftest import Bootstrap, RunningApp, assert_no_task_left
from tests.polling import eventually
from tests.statuspages.test_cache import make_page, opened_of, set_status

from stellwerk.api import FastPaths
from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.ops import Metrics
from stellwerk.statuspages.cache import Key


@dataclass(frozen=True)
class Answered:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    routed: bool  # whether Starlette's router saw the request (else the fast path answered)


@dataclass
class Served:
    """One app, reached through its fast path (`get`) and past it (`get_routed`)."""

    app: Starlette
    running: RunningApp

    @property
    def metrics(self) -> Metrics:
        metrics: Metrics = self.app.state.metrics
        return metrics

    def lookups(self, result: str) -> float:
        return opened_of(self.running).cache.metrics.lookups.labels(result).value

    async def get(self, path: str, **options: Any) -> Answered:
        return await self._call(self.app, path, **options)

    async def get_routed(self, path: str, **options: Any) -> Answered:
        layer: Any = self.app.middleware_stack
        while not isinstance(layer, FastPaths):
            layer = layer.app
        past = layer.app

        async def routed(scope: Scope, receive: Receive, send: Send) -> None:
            scope["app"] = self.app  # what Starlette's own __call__ sets before its stack
            await past(scope, receive, send)

        answered = await self._call(routed, path, **options)
        assert answered.routed
        return answered

    async def _call(
        self,
        app: Any,
        path: str,
        *,
        method: str = "GET",
        query: bytes = b"",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> Answered:
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"stellwerk"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)
        start, body = sent
        return Answered(start["status"], list(start["headers"]), body["body"], "route" in scope)


@pytest.fixture
async def served(tmp_path: Path, database_url: str) -> AsyncIterator[Served]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "database_url": database_url})
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stellwerk") as client:
            running = RunningApp(client, services, settings, bootstrap)
            opened_of(running).cache.render_budget = 60.0
            yield Served(app, running)
    await assert_no_task_left()


async def test_a_fresh_page_is_answered_by_the_fast_path_as_its_route_answers_it(
    served: Served,
) -> None:
    await make_page(served.running)
    incident = await served.running.client.post(
        "/v1/status-pages/acme/incidents", headers=served.running.admin, json={"name": "Slow"}
    )
    assert incident.status_code == 201, incident.text
    paths = [
        "/status/acme",
        "/status/acme/history",
        f"/status/acme/incidents/{incident.json()['id']}",
    ]
    for path in paths:
        first = await served.get(path)
        assert first.routed  # a first reader: the route renders
        assert first.status == 200
        fast = await served.get(path)
        assert not fast.routed
        assert fast == Answered(**{**vars(await served.get_routed(path)), "routed": False})
        head = await served.get(path, method="HEAD")
        assert not head.routed
        assert head == Answered(
            **{**vars(await served.get_routed(path, method="HEAD")), "routed": False}
        )
        etag = dict(fast.headers)[b"etag"]
        for if_none_match in (etag, b'"other", W/' + etag):
            header = ((b"if-none-match", if_none_match),)
            unchanged = await served.get(path, headers=header)
            assert not unchanged.routed
            assert unchanged.status == 304
            routed = await served.get_routed(path, headers=header)
            assert unchanged == Answered(**{**vars(routed), "routed": False})
        other = await served.get(path, headers=((b"if-none-match", b'"other"'),))
        assert (other.status, other.body, other.routed) == (200, fast.body, False)


async def test_the_fast_path_counts_in_the_http_and_cache_metrics_as_the_route(
    served: Served,
) -> None:
    await make_page(served.running)
    assert (await served.get("/status/acme")).routed
    before = requests_total(served.metrics, "GET", "/status/{page}", 200)
    fresh = served.lookups("fresh")
    for _ in range(3):
        assert not (await served.get("/status/acme")).routed
    assert (await served.get_routed("/status/acme")).status == 200
    assert requests_total(served.metrics, "GET", "/status/{page}", 200) == before + 4
    assert served.lookups("fresh") == fresh + 4
    etag = (await served.get("/status/acme")).headers
    unchanged = await served.get("/status/acme", headers=((b"if-none-match", dict(etag)[b"etag"]),))
    assert (unchanged.status, unchanged.routed) == (304, False)
    assert requests_total(served.metrics, "GET", "/status/{page}", 304) == 1


async def test_a_stale_entry_or_a_query_string_goes_to_the_route(served: Served) -> None:
    await make_page(served.running)
    assert (await served.get("/status/acme")).routed
    assert not (await served.get("/status/acme")).routed
    with_query = await served.get("/status/acme", query=b"utm_source=mail")
    assert with_query.routed
    assert with_query.status == 200

    # After a change, the fast path answers the new rendering once it is in L1.
    await set_status(served.running, "major_outage")

    async def answered() -> Answered:
        return await served.get("/status/acme")

    fresh = await eventually(
        answered, accept=lambda a: not a.routed and b"Major System Outage" in a.body, within=5
    )

    # An invalidation event arrives: until the refresh renders, the route serves the stale
    # entry (and starts the refresh), not the fast path.
    cache = opened_of(served.running).cache
    known = cache.known_page("acme")
    assert known is not None
    tenant_id, _page = known
    stale = served.lookups("stale")
    cache.changed(tenant_id, "acme", 1 << 40, now=time.monotonic())
    served_stale = await served.get("/status/acme")
    assert served_stale.routed
    assert served_stale.status == 200
    assert served_stale.body == fresh.body
    assert served.lookups("stale") == stale + 1
    assert cache.fresh(Key(tenant_id, "acme", ("page", "/status/acme"))) is None


@pytest.mark.parametrize("visibility", ["private", "audience"])
async def test_a_page_that_is_not_public_never_takes_the_fast_path(
    served: Served, visibility: str
) -> None:
    await make_page(served.running)
    assert (await served.get("/status/acme")).routed
    assert not (await served.get("/status/acme")).routed
    made = await served.running.client.put(
        "/v1/status-pages/acme",
        headers=served.running.admin,
        json={"title": "Acme", "visibility": visibility},
    )
    assert made.status_code == 200, made.text

    async def answered() -> Answered:
        return await served.get("/status/acme")

    refused = await eventually(answered, accept=lambda a: a.status != 200, within=5)
    assert refused.routed
    # Even with a fresh rendering of the whole page in L1 (as a renderer may leave one), the
    # fast path does not answer: only the route decides who sees a page that is not public.
    cache = opened_of(served.running).cache
    known = cache.known_page("acme")
    assert known is not None
    key = Key(known[0], "acme", ("page", "/status/acme"))

    async def rendered_into_l1() -> object:
        await cache.get(key)
        return cache.fresh(key)

    await eventually(rendered_into_l1, within=5)
    again = await served.get("/status/acme")
    assert again.routed
    assert again.status != 200
    assert b"API" not in again.body
