"""The ingest fast path answers exactly as the Starlette route behind it would, case by case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from stellwerk.api.middleware.ingest import IngestFastPath
from stellwerk.app import build_app
from stellwerk.auth import Scope as KeyScope
from stellwerk.config import load_settings

URL = "/v1/buses/default/events"


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-{i}",
        "source": "urn:shop",
        "type": "order.created",
        "data": {"n": i},
        **extra,
    }


def fast_path_of(app: Starlette) -> IngestFastPath:
    layer: Any = app.middleware_stack
    while not isinstance(layer, IngestFastPath):
        layer = layer.app
    return layer


class Pair:
    """The same app reached two ways: through the fast path, and past it to Starlette's route."""

    def __init__(self, app: Starlette, keys: dict[str, str], read_key: str) -> None:
        self.app = app
        self.keys = keys
        self.read_key = read_key
        fast = fast_path_of(app)

        async def slow(scope: Scope, receive: Receive, send: Send) -> None:
            scope["app"] = app  # what Starlette's own __call__ sets before its stack
            await fast.app(scope, receive, send)

        self.fast = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s")
        self.slow = httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://s")

    def headers(self, key: str = "ingest_key", **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}", **more}


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    settings = load_settings({"data_dir": str(tmp_path), "max_body_bytes": "4096"})
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        keys = msgspec.json.decode((tmp_path / "bootstrap.json").read_bytes())
        tenant = await services.stores.control.get_tenant("default")
        _, read_key = await services.stores.control.create_key(tenant.id, KeyScope.READ)
        keys["read_key"] = read_key
        # The stack is built on the first request.
        await httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s").get(
            "/livez"
        )
        pair = Pair(app, keys, read_key)
        async with pair.fast, pair.slow:
            yield pair


def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return gen()


Body = bytes | tuple[bytes, int]  # a body, or one sent in chunks of that size


async def test_each_case_is_answered_alike(pair: Pair) -> None:
    ingest = pair.headers()
    binary = {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "s", "ce-type": "t"}
    cases: list[tuple[str, str, dict[str, str], Body]] = [
        ("ok", URL, ingest, json.dumps(event(1)).encode()),
        ("batch", URL, ingest, json.dumps([event(2), event(3, id="")]).encode()),
        ("binary", URL, {**ingest, **binary}, b'{"x":1}'),
        ("all bad", URL, ingest, json.dumps([event(4, id=""), {"id": 1}]).encode()),
        ("empty batch", URL, ingest, b"[]"),
        ("bad json", URL, ingest, b"{oops"),
        ("media type", URL, {**ingest, "content-type": "text/plain"}, b"hi"),
        ("no key", URL, {}, b"{}"),
        ("bad key", URL, {"Authorization": "Bearer swk_nope_nope"}, b"{}"),
        ("scheme", URL, {"Authorization": "Basic abc"}, b"{}"),
        ("read scope", URL, pair.headers("read_key"), b"{}"),
        ("unknown bus", "/v1/buses/nope/events", ingest, json.dumps(event(5)).encode()),
        ("bad bus name", "/v1/buses/a%20b/events", ingest, json.dumps(event(6)).encode()),
        ("declared too large", URL, ingest, b"[" + b" " * 5000 + b"]"),
        ("chunked too large", URL, ingest, (b"[" + b" " * 5000 + b"]", 1000)),
        ("chunked ok", URL, ingest, (json.dumps(event(7)).encode(), 10)),
        ("bad length", URL, {**ingest, "content-length": "x"}, b"{}"),
    ]
    for name, url, headers, body in cases:
        answers = []
        for client in (pair.fast, pair.slow):
            content = body if isinstance(body, bytes) else _chunks(*body)
            sent = {"content-type": "application/json", **headers}
            answers.append(await client.post(url, content=content, headers=sent))
        fast, slow = answers
        assert fast.status_code == slow.status_code, (name, fast.text, slow.text)
        assert fast.json() == slow.json() or _only_duplicates_differ(fast, slow), name
        for header in ("content-type", "retry-after", "www-authenticate"):
            assert fast.headers.get(header) == slow.headers.get(header), (name, header)


def _only_duplicates_differ(fast: httpx.Response, slow: httpx.Response) -> bool:
    """The second of two sends of one event is its duplicate: that is the one expected change."""
    if fast.status_code != 202:
        return False
    first, second = fast.json(), slow.json()
    return bool(
        first["accepted"] == second["accepted"] and second["duplicates"] >= first["duplicates"]
    )


async def test_metrics_count_the_fast_path_under_the_route(pair: Pair) -> None:
    await pair.fast.post(URL, json=event(1), headers=pair.headers())
    await pair.fast.post(URL, json=event(2), headers={})
    text = generate_latest(pair.app.state.metrics.registry).decode()
    series = 'stellwerk_http_requests_total{method="POST",route="/v1/buses/{bus}/events"'
    assert series + ',status="202"} 1.0' in text
    assert series + ',status="401"} 1.0' in text
    assert 'stellwerk_ingest_events_accepted_total{bus="default",tenant="default"} 1.0' in text
    assert "stellwerk_http_requests_in_flight 0.0" in text


async def test_other_requests_pass_through(pair: Pair) -> None:
    wrong_method = await pair.fast.get(URL, headers=pair.headers())
    assert wrong_method.status_code == 405
    # (Not a path below it: `.../events/{id}` is an event's delivery history, GET only.)
    trailing = await pair.fast.post(URL + "x", json=event(1), headers=pair.headers())
    assert trailing.status_code == 404
    assert trailing.json()["error"] == "NotFound"
