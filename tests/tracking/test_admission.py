"""One admission for every protocol (`tracking.admission`): the page's origin, the source's
kind and the tenant's request rate are checked alike for Segment, Snowplow and the browser
tracker, and a refusal the page may read keeps its CORS headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import RunningApp, app_running
from tests.tracking.support import make_source

from stellwerk.config import load_settings

SHOP = "https://shop.example"
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with app_running(load_settings({"data_dir": str(tmp_path / "data")})) as running:
        yield running


async def one_request_left(app: RunningApp) -> None:
    """The tenant's request rate from now on, set as the operator sets it: one request, then
    none for 1000 s, so the second request in a row finds the rate spent, however slow the
    machine. (The collectors leave the request's token to ingest, taken with the events'.)"""
    await app.services.platform.quotas.update("default", {"requests_per_second": 0.001})


async def send(client: httpx.AsyncClient, kind: str, key: str, origin: str) -> httpx.Response:
    """One request of protocol `kind` with write key `key`, from a page at `origin`."""
    headers = {"Origin": origin}
    if kind == "segment":
        body: Any = {"writeKey": key, "userId": "u", "event": "E"}
        return await client.post("/v1/track", headers=headers, json=body)
    if kind == "snowplow":
        body = {"schema": PAYLOAD_DATA, "data": [{"e": "pv", "aid": key, "duid": "d"}]}
        return await client.post("/com.snowplowanalytics.snowplow/tp2", headers=headers, json=body)
    body = {"writeKey": key, "batch": [{"type": "track", "userId": "u", "event": "E"}]}
    return await client.post("/v1/b", headers=headers, json=body)


@pytest.mark.parametrize("kind", ["segment", "snowplow", "browser"])
async def test_refusals_keep_their_cors_headers_in_every_protocol(
    app: RunningApp, kind: str
) -> None:
    keys = {
        k: await make_source(app.client, app.admin, k, kind=k, allowed_origins=[SHOP])
        for k in ("segment", "snowplow", "browser")
    }
    other = next(k for k in keys if k != kind)
    await one_request_left(app)

    # An origin the source does not allow: the page may not read the refusal.
    refused = await send(app.client, kind, keys[kind], "https://evil.example")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "OriginNotAllowed"
    assert "access-control-allow-origin" not in refused.headers

    # Another kind's write key from an allowed origin: refused, readable by the page.
    wrong = await send(app.client, kind, keys[other], SHOP)
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["error"] == "WrongSourceKind"
    assert wrong.headers["access-control-allow-origin"] == SHOP

    # Neither refusal took a token of the tenant's rate; the first request does, the second
    # finds it spent, and its 429 is readable by the page too.
    taken = await send(app.client, kind, keys[kind], SHOP)
    assert taken.status_code == 200, taken.text
    spent = await send(app.client, kind, keys[kind], SHOP)
    assert spent.status_code == 429, spent.text
    assert spent.json()["error"] == "TooManyRequests"
    assert int(spent.headers["retry-after"]) >= 1
    assert spent.headers["access-control-allow-origin"] == SHOP
    assert spent.headers["vary"] == "Origin"
