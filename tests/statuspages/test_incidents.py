"""Incidents over the whole app (SQLite and PostgreSQL): opened, updated and resolved, the
components they set, the events they publish, the read model that shows them, and every
refusal naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.conftest import RunningApp
from tests.statuspages.support import internal_events

from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.bodies import render_body
from stellwerk.statuspages.events import CHANGED, COMPONENT_UPDATED
from stellwerk.statuspages.model import Indicator
from stellwerk.statuspages.views import incident_view, page_view


async def make_page(app: RunningApp, *components: str) -> None:
    put = app.client.put
    assert (
        await put("/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"})
    ).status_code == 201
    for component in components:
        made = await put(f"/v1/status-pages/acme/components/{component}", headers=app.admin)
        assert made.status_code == 201, made.text


async def statuses(app: RunningApp) -> dict[str, str]:
    listed = await app.client.get("/v1/status-pages/acme/components", headers=app.admin)
    return {c["id"]: c["status"] for c in listed.json()["components"]}


async def test_an_incident_is_opened_updated_and_resolved_setting_its_components(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app, "api", "db", "web")
    base = "/v1/status-pages/acme/incidents"
    opened = await app.client.post(
        base,
        headers=app.admin,
        json={
            "name": "API errors",
            "impact": "major",
            "body": "We are looking into **elevated errors**.",
            "components": [{"component": "api", "status": "major_outage"}],
        },
    )
    assert opened.status_code == 201, opened.text
    incident = opened.json()
    incident_id = incident["id"]
    assert len(incident_id) == 12
    assert incident_id.isalnum()
    assert incident["status"] == "investigating"
    assert incident["components"] == ["api"]
    assert [u["status"] for u in incident["updates"]] == ["investigating"]
    assert (await statuses(app))["api"] == "major_outage"

    update = await app.client.post(
        f"{base}/{incident_id}/updates",
        headers=app.admin,
        json={
            "status": "identified",
            "body": "The database is slow too.",
            "components": [
                {"component": "api", "status": "partial_outage"},
                {"component": "db", "status": "degraded_performance"},
            ],
        },
    )
    assert update.status_code == 201, update.text
    assert update.json()["components"] == ["api", "db"]
    assert await statuses(app) == {
        "api": "partial_outage",
        "db": "degraded_performance",
        "web": "operational",
    }

    store_side = app.services.capabilities["status-pages"]
    assert isinstance(store_side, StatusPagesOpened)
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    page = await store_side.pages.page(tenant.id, "acme")
    view = await page_view(store_side.pages.store, tenant.id, page, now=datetime.now(UTC))
    assert [i.id for i in view.unresolved] == [incident_id]
    assert view.indicator is Indicator.MAJOR
    assert [u.status for u in view.unresolved[0].updates] == ["identified", "investigating"]
    # An audience that sees only `web` is not shown the incident; one that sees `db` is shown
    # it, narrowed to `db`.
    web_only = await page_view(
        store_side.pages.store,
        tenant.id,
        page,
        now=datetime.now(UTC),
        components=frozenset({"web"}),
    )
    assert web_only.unresolved == []
    assert web_only.indicator is Indicator.NONE
    assert (
        await incident_view(
            store_side.pages.store, tenant.id, page, incident_id, components=frozenset({"web"})
        )
        is None
    )
    narrowed = await incident_view(
        store_side.pages.store, tenant.id, page, incident_id, components=frozenset({"db"})
    )
    assert narrowed is not None
    assert narrowed.components == ["db"]
    assert [a.component for u in narrowed.updates for a in u.affected] == ["db"]

    resolved = await app.client.post(
        f"{base}/{incident_id}/updates",
        headers=app.admin,
        json={
            "status": "resolved",
            "body": "All good.",
            "components": [
                {"component": "api", "status": "operational"},
                {"component": "db", "status": "operational"},
            ],
        },
    )
    assert resolved.status_code == 201
    assert resolved.json()["resolved_at"] is not None
    assert set((await statuses(app)).values()) == {"operational"}

    listed = (await app.client.get(base, headers=app.admin)).json()["incidents"]
    assert [i["id"] for i in listed] == [incident_id]
    unresolved = await app.client.get(f"{base}?unresolved=true", headers=app.admin)
    assert unresolved.json()["incidents"] == []
    got = (await app.client.get(f"{base}/{incident_id}", headers=app.admin)).json()
    assert [u["status"] for u in got["updates"]] == ["resolved", "identified", "investigating"]
    assert got["updates"][2]["body"] == "We are looking into **elevated errors**."
    view = await page_view(store_side.pages.store, tenant.id, page, now=datetime.now(UTC))
    assert view.unresolved == []
    assert view.indicator is Indicator.NONE
    assert [i.id for i in view.history] == [incident_id]

    types = [e["type"] for e in await internal_events(app)]
    assert [t for t in types if t.startswith("status.incident.")] == [
        "status.incident.created",
        "status.incident.updated",
        "status.incident.resolved",
    ]
    assert types.count(COMPONENT_UPDATED) == 5  # api x3, db x2
    created = next(e for e in await internal_events(app) if e["type"] == "status.incident.created")
    assert created["subject"] == "acme"
    assert created["data"]["incident"]["id"] == incident_id
    assert created["data"]["update"]["affected"] == [{"component": "api", "status": "major_outage"}]
    invalidations = [e for e in await internal_events(app) if e["type"] == CHANGED]
    assert {"kind": "incident", "id": incident_id} in [
        {"kind": e["data"]["kind"], "id": e["data"]["id"]} for e in invalidations
    ]

    assert (await app.client.delete(f"{base}/{incident_id}", headers=app.admin)).status_code == 204
    assert (await app.client.get(f"{base}/{incident_id}", headers=app.admin)).status_code == 404


async def test_bad_incidents_are_refused_naming_the_field(running_app: RunningApp) -> None:
    app = running_app
    await make_page(app, "api")
    base = "/v1/status-pages/acme/incidents"

    async def refused(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = await app.client.post(path, headers=app.admin, json=body)
        return answer.status_code, answer.json()

    status, body = await refused("/v1/status-pages/ghost/incidents", {"name": "x"})
    assert status == 404
    assert "ghost" in body["message"]
    status, body = await refused(
        base, {"name": "x", "components": [{"component": "nope", "status": "major_outage"}]}
    )
    assert status == 404
    assert "nope" in body["message"]
    status, body = await refused(base, {"name": "x", "status": "on_fire"})
    assert (status, body["field"]) == (422, "$.status")
    status, body = await refused(base, {"name": "x", "status": "scheduled"})
    assert (status, body["field"]) == (422, "$.status")
    assert "maintenance" in body["message"]
    status, body = await refused(base, {"name": "x", "impact": "maintenance"})
    assert (status, body["field"]) == (422, "$.impact")
    status, body = await refused(base, {"name": "x", "impact": "apocalyptic"})
    assert (status, body["field"]) == (422, "$.impact")
    status, body = await refused(base, {"name": "x", "body": "x" * 20_001})
    assert (status, body["field"]) == (422, "$.body")
    status, body = await refused(base, {"name": ""})
    assert (status, body["field"]) == (422, "$.name")
    status, body = await refused(
        base,
        {
            "name": "x",
            "components": [
                {"component": "api", "status": "major_outage"},
                {"component": "api", "status": "operational"},
            ],
        },
    )
    assert (status, body["field"]) == (422, "$.components")
    status, body = await refused(
        base, {"name": "x", "components": [{"component": "api", "status": "sideways"}]}
    )
    assert (status, body["field"]) == (422, "$.components[0].status")
    status, body = await refused(f"{base}/abcdefghijkl/updates", {"status": "resolved"})
    assert status == 404
    assert "abcdefghijkl" in body["message"]

    made = await app.client.post(base, headers=app.admin, json={"name": "x"})
    assert made.status_code == 201
    incident_id = made.json()["id"]
    status, body = await refused(f"{base}/{incident_id}/updates", {"status": "completed"})
    assert (status, body["field"]) == (422, "$.status")
    listed = await app.client.get(f"{base}?unresolved=maybe", headers=app.admin)
    assert listed.status_code == 400
    assert listed.json()["field"] == "unresolved"
    # Nothing of the refused ones was kept.
    assert len((await app.client.get(base, headers=app.admin)).json()["incidents"]) == 1


def test_bodies_render_markdown_and_escape_html() -> None:
    rendered = render_body(
        "**Down** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    assert "<strong>Down</strong>" in rendered
    assert "<script>" not in rendered
    assert "&lt;script&gt;" in rendered
    assert "<img" not in rendered
    assert 'href="javascript:' not in rendered
