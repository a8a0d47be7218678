"""The history feeds over the whole app (SQLite and PostgreSQL), read with feedparser: valid
Atom 1.0 and RSS 2.0, one entry per incident and maintenance with its link and dates, and a
hostile incident name or body kept as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser  # type: ignore[import-untyped]  # no stubs, no py.typed
from tests.conftest import RunningApp

HOSTILE = '<script>alert("x")</script> & "quotes"'


async def make_history(app: RunningApp) -> dict[str, str]:
    admin = app.admin
    put, post = app.client.put, app.client.post
    assert (
        await put("/v1/status-pages/acme", headers=admin, json={"title": "Acme"})
    ).status_code == 201
    assert (await put("/v1/status-pages/acme/components/api", headers=admin)).status_code == 201
    incident = await post(
        "/v1/status-pages/acme/incidents",
        headers=admin,
        json={
            "name": HOSTILE,
            "body": "**Slow** <img src=x onerror=alert(1)>",
            "components": [{"component": "api", "status": "major_outage"}],
        },
    )
    assert incident.status_code == 201
    start = datetime.now(UTC) + timedelta(days=1)
    maintenance = await post(
        "/v1/status-pages/acme/maintenances",
        headers=admin,
        json={
            "name": "Upgrade",
            "scheduled_for": start.isoformat(),
            "scheduled_until": (start + timedelta(hours=1)).isoformat(),
        },
    )
    assert maintenance.status_code == 201
    return {"incident": incident.json()["id"], "maintenance": maintenance.json()["id"]}


def check_hostile_entry(entry: Any, incident_id: str) -> None:
    assert entry.title == HOSTILE
    assert entry.link == f"http://stellwerk/status/acme/incidents/{incident_id}"


async def test_the_atom_feed_lists_incidents_and_maintenance(running_app: RunningApp) -> None:
    app = running_app
    ids = await make_history(app)
    answer = await app.client.get("/status/acme/history.atom")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/atom+xml")
    assert answer.headers["etag"]
    assert b"<script>" not in answer.content
    assert b"<img" not in answer.content
    feed = feedparser.parse(answer.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "Acme status history"
    assert feed.feed.link == "http://stellwerk/status/acme"
    # The maintenance was written last, so it comes first.
    assert [e.id for e in feed.entries] == [
        f"http://stellwerk/status/acme/incidents/{ids['maintenance']}",
        f"http://stellwerk/status/acme/incidents/{ids['incident']}",
    ]
    hostile = feed.entries[1]
    check_hostile_entry(hostile, ids["incident"])
    assert hostile.published_parsed is not None
    assert hostile.updated_parsed is not None
    content = hostile.content[0].value
    assert "<strong>Slow</strong>" in content
    assert "Investigating" in content
    assert "<img" not in content


async def test_the_rss_feed_lists_incidents_and_maintenance(running_app: RunningApp) -> None:
    app = running_app
    ids = await make_history(app)
    answer = await app.client.get("/status/acme/history.rss")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/rss+xml")
    assert b"<script>" not in answer.content
    feed = feedparser.parse(answer.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "rss20"
    assert feed.feed.link == "http://stellwerk/status/acme"
    assert len(feed.entries) == 2
    hostile = feed.entries[1]
    check_hostile_entry(hostile, ids["incident"])
    assert hostile.id == hostile.link
    assert hostile.published_parsed is not None
    assert "<strong>Slow</strong>" in hostile.description
    again = await app.client.get(
        "/status/acme/history.rss", headers={"If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 304
    assert (await app.client.get("/status/ghost/history.rss")).status_code == 404
