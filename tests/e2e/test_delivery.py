"""Ingest -> route -> deliver, through the whole app, to real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from tests.conftest import RunningApp
from tests.e2e import functions
from tests.e2e.conftest import Receiver

from stellwerk.refs import BusRef, TenantName

ORDER = {"specversion": "1.0", "source": "urn:shop", "type": "order.created"}


async def send(app: RunningApp, *events: dict[str, Any], bus: str = "default") -> None:
    response = await app.client.post(
        f"/v1/buses/{bus}/events", json=list(events), headers=app.auth(app.bootstrap.ingest_key)
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


async def put_rule(app: RunningApp, name: str, rule: dict[str, Any], bus: str = "default") -> Any:
    response = await app.client.put(f"/v1/buses/{bus}/rules/{name}", headers=app.admin, json=rule)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def test_matching_events_reach_the_receiver_signed(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    receiver: Receiver = await receiver_factory(None)
    rule = await put_rule(
        app,
        "big",
        {
            "pattern": {"type": ["order.created"], "data": {"total": [{"numeric": [">", 100]}]}},
            "targets": [{"id": "hook", "type": "http", "url": receiver.url}],
        },
    )
    secret = rule["targets"][0]["secret"]
    await send(
        app,
        {**ORDER, "id": "small", "data": {"total": 5}},
        {**ORDER, "id": "big-1", "data": {"total": 500}},
        {**ORDER, "id": "big-2", "type": "order.cancelled", "data": {"total": 900}},
    )
    await receiver.wait_for(1)
    headers, body = receiver.received[0]
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers["webhook-id"] == "big-1"
    Webhook(secret).verify(body, headers)  # raises if the signature is wrong
    event = receiver.bodies()[0]
    assert event["id"] == "big-1"
    assert event["bus"] == "default"
    assert event["data"] == {"total": 500}
    metrics = (await app.client.get("/metrics")).text
    assert (
        'stellwerk_triggered_rules_total{bus="default",rule="big",tenant="default"} 1.0' in metrics
    )
    assert "stellwerk_ingestion_to_invocation_seconds_count" in metrics


async def test_transformed_input_and_several_targets(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    receiver: Receiver = await receiver_factory(None)
    functions.CALLS.clear()
    await app.client.put("/v1/buses/audit", headers=app.admin)
    await put_rule(
        app,
        "fan-out",
        {
            "pattern": {"type": ["order.created"]},
            "targets": [
                {
                    "id": "hook",
                    "type": "http",
                    "url": receiver.url,
                    "input_transformer": {
                        "input_paths": {"total": "$.data.total", "id": "$.id"},
                        "input_template": '{"order": "<id>", "amount": <total>, '
                        '"rule": "<stellwerk.rule-name>"}',
                    },
                },
                {"id": "fn", "type": "function", "function": "tests.e2e.functions:record"},
                {"id": "copy", "type": "bus", "bus": "audit"},
            ],
        },
    )
    await send(app, {**ORDER, "id": "o-1", "data": {"total": 42}})
    await receiver.wait_for(1)
    headers, _ = receiver.received[0]
    assert headers["Content-Type"] == "application/json"
    assert receiver.bodies() == [{"order": "o-1", "amount": 42, "rule": "fan-out"}]

    async def copied() -> list[Any]:
        while True:
            events = await app.services.stores.event_log.read(
                BusRef(TenantName("default"), "audit")
            )
            if events and functions.CALLS:
                return events
            await app.services.stores.log_watch.wait(BusRef(TenantName("default"), "audit"), 0.2)

    copies = await asyncio.wait_for(copied(), 30)
    assert [e.id for e in copies] == ["o-1"]
    assert functions.CALLS[0]["id"] == "o-1"


async def test_failures_are_retried_and_4xx_dead_lettered_then_redriven(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    healthy = {"on": False}

    async def flaky(_request: web.Request, call: int) -> web.StreamResponse:
        if call == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        if not healthy["on"]:
            return web.Response(status=410, text="gone for now")
        return web.Response(status=200)

    receiver: Receiver = await receiver_factory(flaky)
    await put_rule(
        app,
        "orders",
        {
            "pattern": {"type": ["order.created"]},
            "targets": [{"id": "hook", "type": "http", "url": receiver.url}],
        },
    )
    await send(app, {**ORDER, "id": "o-1"})

    async def dead() -> list[Any]:
        while True:
            page = (
                await app.client.get("/v1/buses/default/dead-letters", headers=app.admin)
            ).json()
            letters: list[Any] = page["dead_letters"]
            if letters:
                return letters
            await asyncio.sleep(0.05)

    letters = await asyncio.wait_for(dead(), 30)
    (letter,) = letters
    assert letter["event_id"] == "o-1"
    assert letter["attempts"] == 2  # one 503 (retried), then a 410 (given up)
    assert "410" in letter["last_error"]
    assert letter["payload"]["id"] == "o-1"

    healthy["on"] = True
    redriven = await app.client.post(
        "/v1/buses/default/dead-letters/redrive", headers=app.admin, json={"all": True}
    )
    assert redriven.json() == {"redriven": 1}
    await receiver.wait_for(1)
    assert receiver.bodies()[0]["id"] == "o-1"
    page = (await app.client.get("/v1/buses/default/dead-letters", headers=app.admin)).json()
    assert page["dead_letters"] == []


async def test_private_targets_are_refused_without_the_flag(running_app: RunningApp) -> None:
    response = await running_app.client.put(
        "/v1/buses/default/rules/r",
        headers=running_app.admin,
        json={
            "pattern": {"type": ["x"]},
            "targets": [{"id": "t", "type": "http", "url": "http://127.0.0.1:9/hook"}],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidTarget"
    assert response.json()["field"] == "targets[0].url"
    assert "127.0.0.1" in response.json()["message"]
    metadata = await running_app.client.put(
        "/v1/buses/default/rules/r",
        headers=running_app.admin,
        json={
            "pattern": {"type": ["x"]},
            "targets": [{"id": "t", "type": "http", "url": "http://169.254.169.254/latest"}],
        },
    )
    assert metadata.status_code == 400
    function = await running_app.client.put(
        "/v1/buses/default/rules/r",
        headers=running_app.admin,
        json={
            "pattern": {"type": ["x"]},
            "targets": [{"id": "t", "type": "function", "function": "os:system"}],
        },
    )
    assert function.status_code == 400
    assert "not allowed for function targets" in function.json()["message"]
