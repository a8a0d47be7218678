"""The status pages' admin API over the whole app (SQLite and PostgreSQL): pages, components,
their status history, the events each change publishes, tenancy and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import RunningApp
from tests.statuspages.support import internal_events

from stellwerk.auth import Scope
from stellwerk.service import provision_tenant
from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.events import CHANGED, COMPONENT_UPDATED


async def test_pages_and_components_round_trip(running_app: RunningApp) -> None:
    app = running_app
    page = {
        "title": "Acme status",
        "description": "How Acme is doing",
        "time_zone": "Europe/Berlin",
        "domains": ["status.acme.example"],
        "branding": {"accent_color": "#0055ff"},
    }
    created = await app.client.put("/v1/status-pages/acme", headers=app.admin, json=page)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "acme"
    assert body["time_zone"] == "Europe/Berlin"
    assert body["visibility"] == "public"
    assert body["domains"] == ["status.acme.example"]
    replaced = await app.client.put(
        "/v1/status-pages/acme", headers=app.admin, json={**page, "title": "Acme"}
    )
    assert replaced.status_code == 200
    assert replaced.json()["created_at"] == body["created_at"]
    assert (await app.client.get("/v1/status-pages/acme", headers=app.admin)).json()[
        "title"
    ] == "Acme"
    listed = (await app.client.get("/v1/status-pages", headers=app.admin)).json()
    assert [p["name"] for p in listed["pages"]] == ["acme"]

    api = await app.client.put(
        "/v1/status-pages/acme/components/api",
        headers=app.admin,
        json={"name": "API", "group": "Core", "position": 1},
    )
    assert api.status_code == 201, api.text
    assert api.json()["status"] == "operational"
    db = await app.client.put("/v1/status-pages/acme/components/db", headers=app.admin)
    assert db.status_code == 201
    assert db.json()["name"] == "db"  # the id stands in for an absent name
    degraded = await app.client.put(
        "/v1/status-pages/acme/components/api",
        headers=app.admin,
        json={"name": "API", "group": "Core", "position": 1, "status": "partial_outage"},
    )
    assert degraded.status_code == 200
    assert degraded.json()["status"] == "partial_outage"
    components = (
        await app.client.get("/v1/status-pages/acme/components", headers=app.admin)
    ).json()["components"]
    assert {c["id"]: c["status"] for c in components} == {
        "api": "partial_outage",
        "db": "operational",
    }

    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    history = await opened.pages.history(tenant.id, "acme", datetime(2000, 1, 1, tzinfo=UTC))
    assert [(h.component, str(h.status)) for h in history] == [
        ("api", "operational"),
        ("db", "operational"),
        ("api", "partial_outage"),
    ]

    events = await internal_events(app)
    types = [e["type"] for e in events]
    assert types.count(COMPONENT_UPDATED) == 1
    update = next(e for e in events if e["type"] == COMPONENT_UPDATED)
    assert update["subject"] == "acme"
    assert update["data"]["old_status"] == "operational"
    assert update["data"]["new_status"] == "partial_outage"
    assert types.count(CHANGED) == 5  # two page puts, three component puts

    assert (
        await app.client.delete("/v1/status-pages/acme/components/db", headers=app.admin)
    ).status_code == 204
    assert (
        await app.client.get("/v1/status-pages/acme/components/db", headers=app.admin)
    ).status_code == 404
    assert (await app.client.delete("/v1/status-pages/acme", headers=app.admin)).status_code == 204
    assert (await app.client.get("/v1/status-pages/acme", headers=app.admin)).status_code == 404
    assert (
        await app.client.get("/v1/status-pages/acme/components", headers=app.admin)
    ).status_code == 404


async def test_bad_input_is_refused_naming_the_field(running_app: RunningApp) -> None:
    app = running_app
    put = app.client.put
    missing_title = await put("/v1/status-pages/p", headers=app.admin, json={})
    assert missing_title.status_code == 422
    assert "title" in missing_title.json()["message"]
    zone = await put(
        "/v1/status-pages/p", headers=app.admin, json={"title": "P", "time_zone": "Mars/Base"}
    )
    assert zone.status_code == 422
    assert zone.json()["field"] == "$.time_zone"
    visibility = await put(
        "/v1/status-pages/p", headers=app.admin, json={"title": "P", "visibility": "secret"}
    )
    assert visibility.status_code == 422
    assert visibility.json()["field"] == "$.visibility"
    domain = await put(
        "/v1/status-pages/p", headers=app.admin, json={"title": "P", "domains": ["not a host"]}
    )
    assert domain.status_code == 422
    assert domain.json()["field"] == "$.domains[0]"
    colour = await put(
        "/v1/status-pages/p",
        headers=app.admin,
        json={"title": "P", "branding": {"accent_color": "blue"}},
    )
    assert colour.status_code == 422
    assert colour.json()["field"] == "$.branding.accent_color"
    bad_name = await put("/v1/status-pages/no%20spaces", headers=app.admin, json={"title": "P"})
    assert bad_name.status_code == 400

    no_page = await put("/v1/status-pages/ghost/components/api", headers=app.admin, json={})
    assert no_page.status_code == 404
    assert "ghost" in no_page.json()["message"]
    assert (
        await put("/v1/status-pages/p", headers=app.admin, json={"title": "P"})
    ).status_code == 201
    status = await put(
        "/v1/status-pages/p/components/api", headers=app.admin, json={"status": "on_fire"}
    )
    assert status.status_code == 422
    assert status.json()["field"] == "$.status"
    unknown = await put("/v1/status-pages/p/components/api", headers=app.admin, json={"colour": 1})
    assert unknown.status_code == 422


async def test_tenants_and_scopes(running_app: RunningApp) -> None:
    app = running_app
    other = await provision_tenant(app.services.stores.control, "other")
    theirs = app.auth(other.admin_key)
    page = {"title": "Ours", "domains": ["status.ours.example"]}
    assert (
        await app.client.put("/v1/status-pages/p", headers=app.admin, json=page)
    ).status_code == 201
    # A page's name is its public address (/status/{page}): unique across tenants, as its
    # custom domains are.
    taken = await app.client.put("/v1/status-pages/p", headers=theirs, json={"title": "Theirs"})
    assert taken.status_code == 409
    assert taken.json()["error"] == "PageNameTaken"
    clash = await app.client.put(
        "/v1/status-pages/q",
        headers=theirs,
        json={"title": "Theirs", "domains": ["status.ours.example"]},
    )
    assert clash.status_code == 409
    assert clash.json()["error"] == "DomainTaken"
    assert clash.json()["field"] == "$.domains"
    assert (
        await app.client.put("/v1/status-pages/q", headers=theirs, json={"title": "Theirs"})
    ).status_code == 201
    # Each tenant sees its own pages only; the other's do not exist for it.
    assert (await app.client.get("/v1/status-pages/q", headers=app.admin)).status_code == 404
    assert (await app.client.get("/v1/status-pages/p", headers=theirs)).status_code == 404
    assert [
        p["name"]
        for p in (await app.client.get("/v1/status-pages", headers=theirs)).json()["pages"]
    ] == ["q"]
    assert (await app.client.delete("/v1/status-pages/p", headers=theirs)).status_code == 404
    await app.client.put("/v1/status-pages/p/components/api", headers=app.admin, json={})
    assert (
        await app.client.get("/v1/status-pages/p/components/api", headers=theirs)
    ).status_code == 404

    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await app.services.stores.control.create_key(tenant.id, Scope.READ)
    reader = app.auth(read_key)
    assert (await app.client.get("/v1/status-pages/p", headers=reader)).status_code == 200
    assert (
        await app.client.put("/v1/status-pages/p", headers=reader, json={"title": "x"})
    ).status_code == 403
    assert (await app.client.get("/v1/status-pages/p")).status_code == 401
