"""Helpers of the tracking tests: a source made through the API, and the events on a bus."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from tests.conftest import RunningApp

from stellwerk.refs import BusRef, TenantName


async def make_source(
    client: httpx.AsyncClient, admin: dict[str, str], name: str = "shop", **settings: Any
) -> str:
    """Create source `name` (a segment source on `default` unless `settings` say otherwise):
    its write key."""
    body = {"kind": "segment", **settings}
    answer = await client.put(f"/v1/sources/{name}", headers=admin, json=body)
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["write_key"]
    return key


async def bus_events(
    app: RunningApp, bus: str = "default", tenant: str = "default"
) -> list[dict[str, Any]]:
    """The events stored on a bus, decoded, in order."""
    stored = await app.services.stores.event_log.read(BusRef(TenantName(tenant), bus))
    return [msgspec.json.decode(e.body) for e in stored]
