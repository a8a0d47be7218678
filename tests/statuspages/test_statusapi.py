"""Statuspage's v2 JSON over the whole app (SQLite and PostgreSQL): a consumer written against
Statuspage's documented shapes reads ours field by field; times carry the page's offset; the
answers have an ETag, 304 and caching headers; unknown and private pages are not found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from tests.conftest import RunningApp

API = "/status/acme/api/v2"

# The keys Statuspage documents for each object (https://metastatuspage.com/api/v2/).
PAGE_KEYS = {"id", "name", "url", "time_zone", "updated_at"}
COMPONENT_KEYS = {
    "id",
    "name",
    "status",
    "created_at",
    "updated_at",
    "position",
    "description",
    "showcase",
    "start_date",
    "group_id",
    "page_id",
    "group",
    "only_show_if_degraded",
}
INCIDENT_KEYS = {
    "id",
    "name",
    "status",
    "created_at",
    "updated_at",
    "monitoring_at",
    "resolved_at",
    "impact",
    "shortlink",
    "started_at",
    "page_id",
    "incident_updates",
    "components",
}
UPDATE_KEYS = {
    "id",
    "status",
    "body",
    "incident_id",
    "created_at",
    "updated_at",
    "display_at",
    "affected_components",
    "deliver_notifications",
    "custom_tweet",
    "tweet_id",
}


# A consumer as one would write it from Statuspage's documented example: typed, strict.
class SpPage(msgspec.Struct):
    id: str
    name: str
    url: str
    time_zone: str
    updated_at: datetime


class SpStatus(msgspec.Struct):
    indicator: str
    description: str


class SpComponent(msgspec.Struct):
    id: str
    name: str
    status: str
    created_at: datetime
    updated_at: datetime
    position: int
    description: str | None
    showcase: bool
    start_date: str | None
    group_id: str | None
    page_id: str
    group: bool
    only_show_if_degraded: bool
    components: list[str] | None = None


class SpAffected(msgspec.Struct):
    code: str
    name: str
    old_status: str
    new_status: str


class SpUpdate(msgspec.Struct):
    id: str
    status: str
    body: str
    incident_id: str
    created_at: datetime
    updated_at: datetime
    display_at: datetime
    affected_components: list[SpAffected] | None
    deliver_notifications: bool
    custom_tweet: str | None
    tweet_id: str | None


class SpIncident(msgspec.Struct):
    id: str
    name: str
    status: str
    created_at: datetime
    updated_at: datetime
    monitoring_at: datetime | None
    resolved_at: datetime | None
    impact: str
    shortlink: str | None
    started_at: datetime
    page_id: str
    incident_updates: list[SpUpdate]
    components: list[SpComponent]
    scheduled_for: datetime | None = None
    scheduled_until: datetime | None = None


class SpSummary(msgspec.Struct):
    page: SpPage
    components: list[SpComponent]
    incidents: list[SpIncident]
    scheduled_maintenances: list[SpIncident]
    status: SpStatus


def aware(text: str) -> bool:
    return datetime.fromisoformat(text).utcoffset() is not None


async def make_page(app: RunningApp) -> dict[str, str]:
    admin = app.admin
    put, post = app.client.put, app.client.post
    page = {"title": "Acme", "time_zone": "Europe/Berlin"}
    assert (await put("/v1/status-pages/acme", headers=admin, json=page)).status_code == 201
    for component, body in {
        "api": {"name": "API", "group": "Core", "position": 1, "description": "The API"},
        "db": {"name": "Database", "group": "Core", "position": 2},
        "web": {"name": "Website"},
    }.items():
        made = await put(f"/v1/status-pages/acme/components/{component}", headers=admin, json=body)
        assert made.status_code == 201
    incident = await post(
        "/v1/status-pages/acme/incidents",
        headers=admin,
        json={
            "name": "<b>API</b> errors",
            "impact": "major",
            "body": "Looking into it.",
            "components": [{"component": "api", "status": "major_outage"}],
        },
    )
    assert incident.status_code == 201
    incident_id = incident.json()["id"]
    monitoring = await post(
        f"/v1/status-pages/acme/incidents/{incident_id}/updates",
        headers=admin,
        json={
            "status": "monitoring",
            "components": [{"component": "api", "status": "operational"}],
        },
    )
    assert monitoring.status_code == 201
    start = datetime.now(UTC) + timedelta(days=3)
    maintenance = await post(
        "/v1/status-pages/acme/maintenances",
        headers=admin,
        json={
            "name": "DB upgrade",
            "scheduled_for": start.isoformat(),
            "scheduled_until": (start + timedelta(hours=2)).isoformat(),
            "components": ["db"],
        },
    )
    assert maintenance.status_code == 201
    return {"incident": incident_id, "maintenance": maintenance.json()["id"]}


async def test_a_statuspage_consumer_reads_our_summary_field_by_field(
    running_app: RunningApp,
) -> None:
    app = running_app
    ids = await make_page(app)
    answer = await app.client.get(f"{API}/summary.json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    raw: dict[str, Any] = answer.json()
    summary = msgspec.json.decode(answer.content, type=SpSummary)

    assert set(raw["page"]) == PAGE_KEYS
    assert summary.page.id == "acme"
    assert summary.page.name == "Acme"
    assert summary.page.url == "http://stellwerk/status/acme"
    assert summary.page.time_zone == "Europe/Berlin"
    assert summary.status.indicator == "major"  # the open incident's impact
    # Components: the group first, then its members, then the rest.
    assert [(c.name, c.group) for c in summary.components] == [
        ("Core", True),
        ("API", False),
        ("Database", False),
        ("Website", False),
    ]
    core, api, db, web = summary.components
    assert core.components == ["api", "db"]
    assert api.group_id == db.group_id == core.id
    assert web.group_id is None
    assert api.description == "The API"
    assert web.description is None
    assert [c.position for c in summary.components] == [1, 2, 3, 4]
    for component in raw["components"]:
        assert set(component) - {"components"} == COMPONENT_KEYS
        assert aware(component["created_at"])
        assert component["updated_at"].endswith(("+01:00", "+02:00"))

    [incident] = summary.incidents
    assert incident.id == ids["incident"]
    assert incident.name == "<b>API</b> errors"  # JSON carries it as written
    assert incident.status == "monitoring"
    assert incident.impact == "major"
    assert incident.monitoring_at is not None
    assert incident.resolved_at is None
    assert set(raw["incidents"][0]) == INCIDENT_KEYS
    assert [u.status for u in incident.incident_updates] == ["monitoring", "investigating"]
    newest, first = incident.incident_updates
    assert set(raw["incidents"][0]["incident_updates"][0]) == UPDATE_KEYS
    assert first.affected_components == [SpAffected("api", "API", "operational", "major_outage")]
    assert newest.affected_components == [SpAffected("api", "API", "major_outage", "operational")]
    assert [c.id for c in incident.components] == ["api"]

    [maintenance] = summary.scheduled_maintenances
    assert maintenance.id == ids["maintenance"]
    assert maintenance.impact == "maintenance"
    assert maintenance.status == "scheduled"
    assert maintenance.scheduled_for is not None
    assert maintenance.scheduled_until is not None
    assert maintenance.scheduled_for.utcoffset() is not None
    assert set(raw["scheduled_maintenances"][0]) == INCIDENT_KEYS | {
        "scheduled_for",
        "scheduled_until",
    }


async def test_every_document_has_statuspage_s_shape(running_app: RunningApp) -> None:
    app = running_app
    ids = await make_page(app)

    async def get(path: str) -> dict[str, Any]:
        answer = await app.client.get(f"{API}/{path}")
        assert answer.status_code == 200, (path, answer.text)
        body: dict[str, Any] = answer.json()
        assert set(body["page"]) == PAGE_KEYS
        return body

    status = await get("status.json")
    assert set(status) == {"page", "status"}
    assert set(status["status"]) == {"indicator", "description"}
    assert [c["id"] for c in (await get("components.json"))["components"]][1:] == [
        "api",
        "db",
        "web",
    ]
    assert [i["id"] for i in (await get("incidents.json"))["incidents"]] == [ids["incident"]]
    assert [i["id"] for i in (await get("incidents/unresolved.json"))["incidents"]] == [
        ids["incident"]
    ]
    maintenance = [ids["maintenance"]]
    for path, expected in {
        "scheduled-maintenances.json": maintenance,
        "scheduled-maintenances/upcoming.json": maintenance,
        "scheduled-maintenances/active.json": [],
    }.items():
        assert [m["id"] for m in (await get(path))["scheduled_maintenances"]] == expected

    # Resolved: gone from unresolved, still in the history.
    resolved = await app.client.post(
        f"/v1/status-pages/acme/incidents/{ids['incident']}/updates",
        headers=app.admin,
        json={"status": "resolved"},
    )
    assert resolved.status_code == 201
    assert (await get("incidents/unresolved.json"))["incidents"] == []
    [incident] = (await get("incidents.json"))["incidents"]
    assert incident["status"] == "resolved"
    assert aware(incident["resolved_at"])
    assert (await get("status.json"))["status"] == {
        "indicator": "none",
        "description": "All Systems Operational",
    }


async def test_answers_carry_an_etag_and_304_when_unchanged(running_app: RunningApp) -> None:
    app = running_app
    await make_page(app)
    first = await app.client.get(f"{API}/status.json")
    etag = first.headers["etag"]
    assert "stale-while-revalidate" in first.headers["cache-control"]
    assert first.headers["access-control-allow-origin"] == "*"
    again = await app.client.get(f"{API}/status.json", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    head = await app.client.head(f"{API}/status.json")
    assert head.status_code == 200
    assert head.headers["etag"] == etag
    changed = await app.client.put(
        "/v1/status-pages/acme/components/web", headers=app.admin, json={"status": "major_outage"}
    )
    assert changed.status_code == 200
    after = await app.client.get(f"{API}/status.json", headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["status"]["indicator"] == "critical"


async def test_unknown_and_private_pages_are_not_found(running_app: RunningApp) -> None:
    app = running_app
    assert (await app.client.get("/status/ghost/api/v2/summary.json")).status_code == 404
    secret = {"title": "Secret", "visibility": "private"}
    assert (
        await app.client.put("/v1/status-pages/secret", headers=app.admin, json=secret)
    ).status_code == 201
    refused = await app.client.get("/status/secret/api/v2/summary.json")
    assert refused.status_code == 401  # a login first (tests/statuspages/test_access.py)
    assert refused.json()["error"] == "LoginRequired"
    assert (await app.client.get("/status/secret/api/v2/nothing.json")).status_code == 404
