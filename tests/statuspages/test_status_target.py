"""The `status` rule target over the whole app: events set a component's status, Alertmanager's
webhook opens and resolves an incident through an input transformer, what cannot be carried
out is dead-lettered with its reason, and a rule that could never work is refused when saved."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from tests.conftest import RunningApp
from tests.polling import eventually
from tests.statuspages.support import internal_events

from stellwerk.statuspages.events import COMPONENT_UPDATED


async def setup_page(app: RunningApp) -> None:
    put = app.client.put
    assert (
        await put("/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"})
    ).status_code == 201
    for component in ("api", "db"):
        assert (
            await put(f"/v1/status-pages/acme/components/{component}", headers=app.admin)
        ).status_code == 201
    assert (await put("/v1/buses/alerts", headers=app.admin, json={})).status_code == 201


async def save_rule(
    app: RunningApp, name: str, pattern: dict[str, Any], target: dict[str, Any]
) -> httpx.Response:
    return await app.client.put(
        f"/v1/buses/alerts/rules/{name}",
        headers=app.admin,
        json={"pattern": pattern, "targets": [{"id": "status", "type": "status", **target}]},
    )


async def send(app: RunningApp, event: dict[str, Any]) -> None:
    response = await app.client.post(
        "/v1/buses/alerts/events",
        headers={
            **app.auth(app.bootstrap.ingest_key),
            "Content-Type": "application/cloudevents+json",
        },
        content=msgspec.json.encode({"specversion": "1.0", **event}),
    )
    assert response.status_code == 202, response.text


async def component(app: RunningApp, name: str) -> str:
    response = await app.client.get(f"/v1/status-pages/acme/components/{name}", headers=app.admin)
    status: str = response.json()["status"]
    return status


async def test_matching_events_set_a_components_status(running_app: RunningApp) -> None:
    app = running_app
    await setup_page(app)
    saved = await save_rule(
        app,
        "deploy-failed",
        {"type": ["deploy.failed"]},
        {"parameters": {"page": "acme", "component": "api", "status": "degraded_performance"}},
    )
    assert saved.status_code in (200, 201), saved.text
    await send(app, {"id": "d1", "source": "ci", "type": "deploy.succeeded"})
    await send(app, {"id": "d2", "source": "ci", "type": "deploy.failed"})
    await eventually(lambda: component(app, "api"), accept=lambda s: s == "degraded_performance")
    assert await component(app, "db") == "operational"
    # The change is an event itself, which rules can route anywhere. It is published after the
    # status is stored, so a reader that sees the status may still be before the event.
    updates = await eventually(lambda: internal_events(app, COMPONENT_UPDATED))
    assert [(u["data"]["component"]["id"], u["data"]["new_status"]) for u in updates] == [
        ("api", "degraded_performance")
    ]


ALERTMANAGER_TRANSFORMER = {
    "input_paths": {
        "key": "$.data.groupKey",
        "status": "$.data.status",
        "summary": "$.data.commonAnnotations.summary",
    },
    "input_template": '{"incident": {"key": <key>, "status": <status>, "name": <summary>}}',
}


def alertmanager(status: str, n: int) -> dict[str, Any]:
    """An Alertmanager webhook (version 4), as a CloudEvent's data."""
    return {
        "id": f"am-{n}",
        "source": "alertmanager",
        "type": "alertmanager.alert",
        "data": {
            "version": "4",
            "groupKey": '{}:{alertname="ApiDown"}',
            "status": status,
            "receiver": "stellwerk",
            "groupLabels": {"alertname": "ApiDown"},
            "commonLabels": {"alertname": "ApiDown", "severity": "critical"},
            "commonAnnotations": {"summary": "The API answers 503"},
            "externalURL": "http://alertmanager:9093",
            "alerts": [{"status": status, "labels": {"alertname": "ApiDown"}}],
        },
    }


async def test_alertmanager_opens_updates_and_resolves_one_incident(
    running_app: RunningApp,
) -> None:
    app = running_app
    await setup_page(app)
    saved = await save_rule(
        app,
        "alertmanager",
        {"source": ["alertmanager"]},
        {
            "parameters": {
                "page": "acme",
                "incident": {"impact": "critical", "components": {"api": "major_outage"}},
            },
            "input_transformer": ALERTMANAGER_TRANSFORMER,
        },
    )
    assert saved.status_code in (200, 201), saved.text

    async def incidents() -> list[dict[str, Any]]:
        response = await app.client.get("/v1/status-pages/acme/incidents", headers=app.admin)
        found: list[dict[str, Any]] = response.json()["incidents"]
        return found

    await send(app, alertmanager("firing", 1))
    opened = await eventually(incidents, accept=lambda found: len(found) == 1)
    assert opened[0]["name"] == "The API answers 503"
    assert opened[0]["status"] == "investigating"
    assert opened[0]["impact"] == "critical"
    await eventually(lambda: component(app, "api"), accept=lambda s: s == "major_outage")

    await send(app, alertmanager("firing", 2))  # repeated while it lasts: the same incident
    await eventually(incidents, accept=lambda found: len(found[0]["updates"]) == 2)
    await send(app, alertmanager("resolved", 3))
    resolved = await eventually(incidents, accept=lambda found: found[0]["status"] == "resolved")
    assert len(resolved) == 1
    await eventually(lambda: component(app, "api"), accept=lambda s: s == "operational")

    await send(app, alertmanager("firing", 4))  # it fires again: a new incident
    again = await eventually(incidents, accept=lambda found: len(found) == 2)
    assert {i["status"] for i in again} == {"resolved", "investigating"}


async def test_what_cannot_be_carried_out_is_dead_lettered(running_app: RunningApp) -> None:
    app = running_app
    await setup_page(app)
    saved = await save_rule(
        app,
        "by-label",
        {"type": ["component.status"]},
        {
            "parameters": {"page": "acme"},
            "input_transformer": {
                "input_paths": {"component": "$.data.component", "status": "$.data.status"},
                "input_template": '{"component": <component>, "status": <status>}',
            },
            "retry_policy": {"maximum_retry_attempts": 0},
        },
    )
    assert saved.status_code in (200, 201), saved.text
    await send(
        app,
        {
            "id": "c1",
            "source": "x",
            "type": "component.status",
            "data": {"component": "cache", "status": "major_outage"},
        },
    )
    await send(
        app,
        {
            "id": "c2",
            "source": "x",
            "type": "component.status",
            "data": {"component": "db", "status": "on_fire"},
        },
    )
    await send(
        app,
        {
            "id": "c3",
            "source": "x",
            "type": "component.status",
            "data": {"component": "db", "status": "partial_outage"},
        },
    )
    await eventually(lambda: component(app, "db"), accept=lambda s: s == "partial_outage")

    async def dead() -> list[dict[str, Any]]:
        response = await app.client.get("/v1/buses/alerts/dead-letters", headers=app.admin)
        letters: list[dict[str, Any]] = response.json()["dead_letters"]
        return letters

    letters = await eventually(dead, accept=lambda found: len(found) == 2)
    errors = {letter["event_id"]: letter["last_error"] for letter in letters}
    assert "cache" in errors["c1"]
    assert "does not exist" in errors["c1"]
    assert "on_fire" in errors["c2"]


async def test_rules_that_could_never_work_are_refused(running_app: RunningApp) -> None:
    app = running_app
    await setup_page(app)
    pattern = {"source": ["x"]}

    async def refused(target: dict[str, Any]) -> dict[str, Any]:
        response = await save_rule(app, "r", pattern, target)
        # A rule that cannot be saved is 400 InvalidRule naming the field, as for every target.
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "InvalidRule"
        body: dict[str, Any] = response.json()
        return body

    no_parameters = await refused({})
    assert no_parameters["field"] == "targets[0].parameters"
    no_page = await refused(
        {"parameters": {"page": "ghost", "component": "api", "status": "major_outage"}}
    )
    assert "ghost" in no_page["message"]
    no_component = await refused(
        {"parameters": {"page": "acme", "component": "cache", "status": "major_outage"}}
    )
    assert "cache" in no_component["message"]
    incomplete = await refused({"parameters": {"page": "acme", "component": "api"}})
    assert "input transformer" in incomplete["message"]
    bad_status = await refused(
        {"parameters": {"page": "acme", "component": "api", "status": "on_fire"}}
    )
    assert bad_status["field"] == "targets[0].parameters.status"
    unknown_field = await refused({"parameters": {"page": "acme", "colour": "red"}})
    assert unknown_field["field"] == "targets[0].parameters"
    assert "colour" in unknown_field["message"]
    unknown_type = await app.client.put(
        "/v1/buses/alerts/rules/r",
        headers=app.admin,
        json={"pattern": pattern, "targets": [{"id": "t", "type": "statuz"}]},
    )
    assert unknown_type.status_code == 422
    assert unknown_type.json()["field"] == "$.targets[0].type"
    assert "status" in unknown_type.json()["message"]
    http_with_parameters = await app.client.put(
        "/v1/buses/alerts/rules/r",
        headers=app.admin,
        json={
            "pattern": pattern,
            "targets": [
                {"id": "t", "type": "http", "url": "https://example.com/", "parameters": {}}
            ],
        },
    )
    assert http_with_parameters.status_code == 400
    assert http_with_parameters.json()["field"] == "targets[0].parameters"


async def test_firings_delivered_at_once_open_one_incident(running_app: RunningApp) -> None:
    """Two firings of one alert in one batch are delivered at the same time (the target's
    concurrency): each must not find the other's incident missing and open its own."""
    app = running_app
    await setup_page(app)
    saved = await save_rule(
        app,
        "alertmanager",
        {"source": ["alertmanager"]},
        {
            "parameters": {"page": "acme", "incident": {"components": {"api": "major_outage"}}},
            "input_transformer": ALERTMANAGER_TRANSFORMER,
        },
    )
    assert saved.status_code in (200, 201), saved.text
    batch = [{"specversion": "1.0", **alertmanager("firing", n)} for n in (1, 2, 3)]
    response = await app.client.post(
        "/v1/buses/alerts/events",
        headers={
            **app.auth(app.bootstrap.ingest_key),
            "Content-Type": "application/cloudevents-batch+json",
        },
        content=msgspec.json.encode(batch),
    )
    assert response.status_code == 202, response.text

    async def incidents() -> list[dict[str, Any]]:
        response = await app.client.get("/v1/status-pages/acme/incidents", headers=app.admin)
        found: list[dict[str, Any]] = response.json()["incidents"]
        return found

    settled = await eventually(
        incidents, accept=lambda found: sum(len(i["updates"]) for i in found) == 3
    )
    assert len(settled) == 1, settled
