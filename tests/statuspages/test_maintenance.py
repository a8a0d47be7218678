"""Scheduled maintenance over the whole app (SQLite and PostgreSQL): it begins and completes on
time, sets its components under maintenance and gives their statuses back (unless someone
changed them meanwhile, or another maintenance still covers them), step by step with a time we
choose, and once for real with the scheduler's own loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import RunningApp
from tests.polling import eventually
from tests.statuspages.support import internal_events

from stellwerk.statuspages import StatusPagesOpened

BASE = "/v1/status-pages/acme/maintenances"


def opened_of(app: RunningApp) -> StatusPagesOpened:
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    return opened


async def make_page(app: RunningApp, components: dict[str, str]) -> None:
    put = app.client.put
    assert (
        await put("/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"})
    ).status_code == 201
    for component, status in components.items():
        made = await put(
            f"/v1/status-pages/acme/components/{component}",
            headers=app.admin,
            json={"status": status},
        )
        assert made.status_code == 201, made.text


async def statuses(app: RunningApp) -> dict[str, str]:
    listed = await app.client.get("/v1/status-pages/acme/components", headers=app.admin)
    return {c["id"]: c["status"] for c in listed.json()["components"]}


async def schedule(
    app: RunningApp, start: datetime, end: datetime, components: list[str]
) -> dict[str, Any]:
    made = await app.client.post(
        BASE,
        headers=app.admin,
        json={
            "name": "Database upgrade",
            "body": "We upgrade the database.",
            "scheduled_for": start.isoformat(),
            "scheduled_until": end.isoformat(),
            "components": components,
        },
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def maintenance_status(app: RunningApp, maintenance_id: str) -> str:
    got = await app.client.get(f"{BASE}/{maintenance_id}", headers=app.admin)
    status: str = got.json()["status"]
    return status


async def test_maintenance_begins_and_completes_giving_back_what_nobody_changed(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app, {"api": "operational", "db": "degraded_performance", "web": "operational"})
    maintenances = opened_of(app).maintenances
    acting = app.services.platform.tenants.acting
    # Far enough ahead that the app's own scheduler leaves these to us.
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    hour = timedelta(hours=1)
    upgrade = await schedule(app, t + hour, t + 2 * hour, ["api", "db"])
    assert upgrade["status"] == "scheduled"
    assert upgrade["impact"] == "maintenance"

    assert await maintenances.run_due(t, acting) == 0
    assert await maintenance_status(app, upgrade["id"]) == "scheduled"

    assert await maintenances.run_due(t + hour, acting) == 0
    assert await maintenance_status(app, upgrade["id"]) == "in_progress"
    assert await statuses(app) == {
        "api": "under_maintenance",
        "db": "under_maintenance",
        "web": "operational",
    }
    # Run again at the same time: nothing more happens.
    assert await maintenances.run_due(t + hour, acting) == 0
    got = (await app.client.get(f"{BASE}/{upgrade['id']}", headers=app.admin)).json()
    assert [u["status"] for u in got["updates"]] == ["in_progress", "scheduled"]

    # An incident sets db meanwhile: the maintenance does not undo that.
    incident = await app.client.post(
        "/v1/status-pages/acme/incidents",
        headers=app.admin,
        json={"name": "DB down", "components": [{"component": "db", "status": "major_outage"}]},
    )
    assert incident.status_code == 201

    assert await maintenances.run_due(t + 2 * hour, acting) == 0
    assert await maintenance_status(app, upgrade["id"]) == "completed"
    assert await statuses(app) == {"api": "operational", "db": "major_outage", "web": "operational"}
    completed = (await app.client.get(f"{BASE}/{upgrade['id']}", headers=app.admin)).json()
    assert completed["resolved_at"] is not None
    assert completed["updates"][0]["affected"] == [{"component": "api", "status": "operational"}]

    types = [e["type"] for e in await internal_events(app)]
    assert [t for t in types if t.startswith("status.maintenance.")] == [
        "status.maintenance.created",
        "status.maintenance.started",
        "status.maintenance.completed",
    ]


async def test_overlapping_maintenance_gives_back_the_status_from_before_the_first(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app, {"api": "degraded_performance"})
    maintenances = opened_of(app).maintenances
    acting = app.services.platform.tenants.acting
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    hour = timedelta(hours=1)
    first = await schedule(app, t + hour, t + 3 * hour, ["api"])
    second = await schedule(app, t + 2 * hour, t + 4 * hour, ["api"])

    await maintenances.run_due(t + hour, acting)
    await maintenances.run_due(t + 2 * hour, acting)
    assert await maintenance_status(app, second["id"]) == "in_progress"
    await maintenances.run_due(t + 3 * hour, acting)
    assert await maintenance_status(app, first["id"]) == "completed"
    assert await statuses(app) == {"api": "under_maintenance"}  # the second still covers it
    await maintenances.run_due(t + 4 * hour, acting)
    assert await maintenance_status(app, second["id"]) == "completed"
    assert await statuses(app) == {"api": "degraded_performance"}


async def test_an_admin_begins_and_ends_maintenance_early(running_app: RunningApp) -> None:
    app = running_app
    await make_page(app, {"api": "operational"})
    t = datetime.now(UTC) + timedelta(days=10)
    planned = await schedule(app, t, t + timedelta(hours=1), ["api"])
    post = app.client.post
    began = await post(
        f"{BASE}/{planned['id']}/updates",
        headers=app.admin,
        json={"status": "in_progress", "body": "Starting early."},
    )
    assert began.status_code == 201, began.text
    assert await statuses(app) == {"api": "under_maintenance"}
    ended = await post(
        f"{BASE}/{planned['id']}/updates", headers=app.admin, json={"status": "completed"}
    )
    assert ended.status_code == 201
    assert await statuses(app) == {"api": "operational"}
    listed = (await app.client.get(f"{BASE}?open=true", headers=app.admin)).json()
    assert listed["maintenances"] == []


async def test_bad_maintenance_is_refused_naming_the_field(running_app: RunningApp) -> None:
    app = running_app
    await make_page(app, {"api": "operational"})
    t = datetime.now(UTC) + timedelta(days=1)

    async def refused(body: dict[str, Any], path: str = BASE) -> tuple[int, dict[str, Any]]:
        answer = await app.client.post(path, headers=app.admin, json=body)
        return answer.status_code, answer.json()

    good = {
        "name": "Upgrade",
        "scheduled_for": t.isoformat(),
        "scheduled_until": (t + timedelta(hours=1)).isoformat(),
        "components": ["api"],
    }
    status, body = await refused({**good, "scheduled_until": good["scheduled_for"]})
    assert (status, body["field"]) == (422, "$.scheduled_until")
    status, body = await refused({**good, "scheduled_for": "2030-01-01T10:00:00"})
    assert (status, body["field"]) == (422, "$.scheduled_for")
    status, body = await refused({**good, "scheduled_for": "next tuesday"})
    assert (status, body["field"]) == (422, "$.scheduled_for")
    status, body = await refused({**good, "components": ["nope"]})
    assert status == 404
    assert "nope" in body["message"]
    status, body = await refused({key: v for key, v in good.items() if key != "scheduled_until"})
    assert status == 422
    assert "scheduled_until" in body["message"]
    status, body = await refused(good, "/v1/status-pages/ghost/maintenances")
    assert status == 404

    made = await app.client.post(BASE, headers=app.admin, json=good)
    assert made.status_code == 201
    status, body = await refused({"status": "investigating"}, f"{BASE}/{made.json()['id']}/updates")
    assert (status, body["field"]) == (422, "$.status")
    # A maintenance is not an incident, nor the other way round.
    incident = await app.client.post(
        "/v1/status-pages/acme/incidents", headers=app.admin, json={"name": "x"}
    )
    status, body = await refused({"status": "completed"}, f"{BASE}/{incident.json()['id']}/updates")
    assert status == 404


async def test_the_scheduler_begins_and_completes_maintenance_on_time(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app, {"api": "partial_outage"})
    start = datetime.now(UTC) + timedelta(seconds=1)
    planned = await schedule(app, start, start + timedelta(seconds=1), ["api"])

    await eventually(
        lambda: maintenance_status(app, planned["id"]),
        accept=lambda status: status == "completed",
        within=15,
        what="the maintenance to complete on its own",
    )
    assert await statuses(app) == {"api": "partial_outage"}
    opened = opened_of(app)
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    history = await opened.pages.history(tenant.id, "acme", start - timedelta(seconds=5))
    assert [(h.status, h.at >= start) for h in history if h.at >= start - timedelta(seconds=1)][
        -2:
    ] == [("under_maintenance", True), ("partial_outage", True)]


async def test_an_admin_reschedules_and_rescopes_maintenance_and_the_scheduler_follows(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app, {"api": "operational", "db": "degraded_performance", "web": "operational"})
    maintenances = opened_of(app).maintenances
    acting = app.services.platform.tenants.acting
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    hour = timedelta(hours=1)
    planned = await schedule(app, t + hour, t + 2 * hour, ["api"])
    one = f"{BASE}/{planned['id']}"

    moved = await app.client.patch(
        one,
        headers=app.admin,
        json={
            "name": "Database and API upgrade",
            "scheduled_for": (t + 3 * hour).isoformat(),
            "scheduled_until": (t + 4 * hour).isoformat(),
            "components": ["api", "db"],
            "body": "Moved by two hours; the database too.",
        },
    )
    assert moved.status_code == 200, moved.text
    shown = moved.json()
    assert shown["name"] == "Database and API upgrade"
    assert datetime.fromisoformat(shown["scheduled_for"]) == t + 3 * hour
    assert datetime.fromisoformat(shown["scheduled_until"]) == t + 4 * hour
    assert shown["components"] == ["api", "db"]
    assert shown["status"] == "scheduled"
    assert [(u["status"], u["body"]) for u in shown["updates"]] == [
        ("scheduled", "Moved by two hours; the database too."),
        ("scheduled", "We upgrade the database."),
    ]
    assert (await app.client.get(one, headers=app.admin)).json() == shown
    upcoming = await app.client.get("/status/acme/api/v2/scheduled-maintenances/upcoming.json")
    (listed,) = upcoming.json()["scheduled_maintenances"]
    assert listed["name"] == "Database and API upgrade"
    assert datetime.fromisoformat(listed["scheduled_for"]) == t + 3 * hour

    # The old start comes and goes; the new one begins it, with both components.
    assert await maintenances.run_due(t + hour, acting) == 0
    assert await maintenance_status(app, planned["id"]) == "scheduled"
    assert await maintenances.run_due(t + 3 * hour, acting) == 0
    assert await statuses(app) == {
        "api": "under_maintenance",
        "db": "under_maintenance",
        "web": "operational",
    }

    # Under way, its end moves and its components change; its start is history.
    longer = await app.client.patch(
        one, headers=app.admin, json={"scheduled_until": (t + 5 * hour).isoformat()}
    )
    assert longer.status_code == 200, longer.text
    assert longer.json()["status"] == "in_progress"
    early = await app.client.patch(
        one, headers=app.admin, json={"scheduled_for": (t + 2 * hour).isoformat()}
    )
    assert early.status_code == 409, early.text
    assert early.json()["field"] == "$.scheduled_for"
    rescoped = await app.client.patch(
        one, headers=app.admin, json={"components": ["api", "web"], "body": "db is done."}
    )
    assert rescoped.status_code == 200, rescoped.text
    assert rescoped.json()["components"] == ["api", "web"]
    assert rescoped.json()["updates"][0]["affected"] == [
        {"component": "web", "status": "under_maintenance"},
        {"component": "db", "status": "degraded_performance"},  # what it had before
    ]
    assert await statuses(app) == {
        "api": "under_maintenance",
        "db": "degraded_performance",
        "web": "under_maintenance",
    }
    assert await maintenances.run_due(t + 4 * hour, acting) == 0
    assert await maintenance_status(app, planned["id"]) == "in_progress"
    assert await maintenances.run_due(t + 5 * hour, acting) == 0
    assert await maintenance_status(app, planned["id"]) == "completed"
    assert await statuses(app) == {
        "api": "operational",
        "db": "degraded_performance",
        "web": "operational",
    }

    done = await app.client.patch(one, headers=app.admin, json={"name": "Too late"})
    assert done.status_code == 409
    assert done.json()["error"] == "Conflict"
    assert "completed" in done.json()["message"]

    types = [e["type"] for e in await internal_events(app)]
    assert [t for t in types if t.startswith("status.maintenance.")] == [
        "status.maintenance.created",
        "status.maintenance.updated",
        "status.maintenance.started",
        "status.maintenance.updated",
        "status.maintenance.updated",
        "status.maintenance.completed",
    ]


async def test_a_bad_maintenance_change_is_refused_naming_the_field(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app, {"api": "operational"})
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    planned = await schedule(app, t, t + timedelta(hours=1), ["api"])
    one = f"{BASE}/{planned['id']}"

    cases: list[tuple[dict[str, Any], str]] = [
        ({"scheduled_until": t.isoformat()}, "$.scheduled_until"),
        ({"scheduled_for": (t + timedelta(hours=2)).isoformat()}, "$.scheduled_for"),
        ({"scheduled_for": "next tuesday"}, "$.scheduled_for"),
        ({"scheduled_until": "2030-01-01T10:00:00"}, "$.scheduled_until"),  # no offset
        ({"name": "x" * 201}, "$.name"),
        ({"components": ["api", "api"]}, "$.components"),
        ({"status": "in_progress"}, ""),  # unknown field: the updates take a status
        ({}, "$"),
    ]
    for change, field in cases:
        refused = await app.client.patch(one, headers=app.admin, json=change)
        assert refused.status_code == 422, (change, refused.text)
        assert refused.json().get("field", "").startswith(field), (change, refused.json())
    unknown = await app.client.patch(one, headers=app.admin, json={"components": ["nope"]})
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["message"]
    assert (
        await app.client.patch(f"{BASE}/nope", headers=app.admin, json={"name": "x"})
    ).status_code == 404
    incident = await app.client.post(
        "/v1/status-pages/acme/incidents", headers=app.admin, json={"name": "x"}
    )
    not_maintenance = await app.client.patch(
        f"{BASE}/{incident.json()['id']}", headers=app.admin, json={"name": "y"}
    )
    assert not_maintenance.status_code == 404
    unchanged = (await app.client.get(one, headers=app.admin)).json()
    assert unchanged["updates"] == planned["updates"]
    assert unchanged["scheduled_until"] == planned["scheduled_until"]
