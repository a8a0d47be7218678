"""Connections through the API, and their credentials arriving at a real receiver."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from tests.conftest import RunningApp
from tests.e2e.conftest import Receiver
from tests.e2e.test_delivery import ORDER, put_rule, send


async def test_connection_round_trip_hides_and_seals_secrets(delivering_app: RunningApp) -> None:
    app = delivering_app
    spec = {"type": "basic", "username": "stellwerk", "password": "s3cret-pass"}
    created = await app.client.put("/v1/connections/partner", headers=app.admin, json=spec)
    assert created.status_code == 201, created.text
    assert created.json()["connection"] == {"type": "basic", "username": "stellwerk"}
    listed = (await app.client.get("/v1/connections", headers=app.admin)).json()
    assert [c["name"] for c in listed["connections"]] == ["partner"]
    async with app.services.stores.control.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT parameters FROM connections"))).scalar_one()
    assert "s3cret-pass" not in stored

    bad = await app.client.put(
        "/v1/connections/broken", headers=app.admin, json={"type": "api_key", "header": "X-Key"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "InvalidConnection"
    assert bad.json()["field"] == "$.value"
    unknown = await app.client.put("/v1/connections/x", headers=app.admin, json={"type": "ntlm"})
    assert unknown.status_code == 400
    missing = await app.client.put(
        "/v1/buses/default/rules/r",
        headers=app.admin,
        json={
            "pattern": {"type": ["x"]},
            "targets": [
                {"id": "t", "type": "http", "url": "http://127.0.0.1:9/", "connection": "nope"}
            ],
        },
    )
    assert missing.status_code == 400
    assert missing.json()["field"] == "targets[0].connection"
    assert (
        await app.client.delete("/v1/connections/partner", headers=app.admin)
    ).status_code == 204
    assert (await app.client.get("/v1/connections/partner", headers=app.admin)).status_code == 404


async def test_basic_and_api_key_credentials_reach_the_receiver(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app

    async def check(request: web.Request, _call: int) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(b"stellwerk:s3cret").decode()
        ok = request.headers.get("Authorization") == expected
        return web.Response(status=200 if ok else 401)

    receiver: Receiver = await receiver_factory(check)
    await app.client.put(
        "/v1/connections/partner",
        headers=app.admin,
        json={"type": "basic", "username": "stellwerk", "password": "s3cret"},
    )
    await put_rule(
        app,
        "authed",
        {
            "pattern": {"type": ["order.created"]},
            "targets": [
                {"id": "hook", "type": "http", "url": receiver.url, "connection": "partner"}
            ],
        },
    )
    await send(app, {**ORDER, "id": "a-1"})
    await receiver.wait_for(1)
    assert receiver.bodies()[0]["id"] == "a-1"


async def test_a_receiver_that_is_down_for_a_while_gets_everything_after(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    up = asyncio.Event()
    refused_twice = asyncio.Event()

    async def down_then_up(_request: web.Request, call: int) -> web.StreamResponse:
        if up.is_set():
            return web.Response(status=200)
        if call >= 2:
            refused_twice.set()
        return web.Response(status=503, headers={"Retry-After": "0"})

    receiver: Receiver = await receiver_factory(down_then_up)
    await put_rule(
        app,
        "orders",
        {
            "pattern": {"type": ["order.created"]},
            "targets": [{"id": "hook", "type": "http", "url": receiver.url, "ordered": True}],
        },
    )
    await send(app, *({**ORDER, "id": f"o-{n}", "partitionkey": "customer-7"} for n in range(5)))

    await asyncio.wait_for(refused_twice.wait(), 30)
    assert receiver.received == []
    up.set()
    await receiver.wait_for(5, within=60)
    # Ordered by partition key: delivered one at a time, in log order.
    assert [e["id"] for e in receiver.bodies()] == [f"o-{n}" for n in range(5)]
