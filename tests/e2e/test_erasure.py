"""Erasure through the whole app: one user's events go from every store, the other's stay."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from tests import polling
from tests.conftest import Bootstrap, RunningApp
from tests.e2e.conftest import Receiver

from stellwerk.app import build_app
from stellwerk.auth import parse_key
from stellwerk.compose import Services
from stellwerk.config import load_settings
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import NewEvent

T = TypeVar("T")
SIGNUP = {"specversion": "1.0", "source": "urn:app", "type": "user.signup"}
STRICT = {
    "type": "object",
    "required": ["userId", "plan"],
    "properties": {"plan": {"enum": ["free", "pro"]}},
}


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 30) -> T:
    """Poll `probe` until it gives something (not None), or fail after `within` seconds."""
    found: T | None = await polling.eventually(
        probe, within=within, every=0.05, accept=lambda found: found is not None
    )
    assert found is not None
    return found


async def ingest(
    app: RunningApp, bus: str, *events: dict[str, Any], status: int = 202
) -> dict[str, Any]:
    response = await app.client.post(
        f"/v1/buses/{bus}/events", json=list(events), headers=app.auth(app.bootstrap.ingest_key)
    )
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def finished(app: RunningApp, erasure_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        entry: dict[str, Any] = (
            await app.client.get(f"/v1/erasures/{erasure_id}", headers=app.admin)
        ).json()
        return None if entry["state"] == "running" else entry

    return await eventually(probe)


async def logged(services: Services, bus: str) -> list[str]:
    return [
        e.id
        for e in await services.stores.event_log.read(
            BusRef(TenantName("default"), bus), limit=1000
        )
    ]


def user_event(event_id: str, user: str, **data: Any) -> dict[str, Any]:
    return {
        **SIGNUP,
        "id": event_id,
        "subject": f"account-{user}",
        "data": {"userId": user, **data},
    }


async def test_erasing_one_user_leaves_no_trace_in_any_store_and_keeps_the_other(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    services = app.services

    async def gone(_request: web.Request, _call: int) -> web.StreamResponse:
        return web.Response(status=410, text="gone")

    receiver: Receiver = await receiver_factory(gone)
    rule = {
        "pattern": {"type": ["user.signup"]},
        "targets": [{"id": "crm", "type": "http", "url": receiver.url}],
    }
    assert (
        await app.client.put("/v1/buses/default/rules/crm", headers=app.admin, json=rule)
    ).is_success
    archive = await app.client.put("/v1/buses/default/archives/all", headers=app.admin, json={})
    assert archive.is_success, archive.text
    await app.client.put(
        "/v1/buses/strict", headers=app.admin, json={"schema_validation": "enforce"}
    )
    schema = await app.client.put(
        "/v1/schemas/user.signup", headers=app.admin, json={"schema": STRICT}
    )
    assert schema.is_success, schema.text

    await ingest(
        app,
        "default",
        *(
            user_event(f"{user}-{n}", user, plan="free")
            for n in range(3)
            for user in ("ann", "bob")
        ),
    )
    refused = await ingest(
        app,
        "strict",
        user_event("ann-bad", "ann", plan="?"),
        user_event("bob-bad", "bob", plan="?"),
        status=400,
    )
    assert [f["failed_event_id"] is not None for f in refused["failed"]] == [True, True]

    async def dead_letters() -> list[dict[str, Any]] | None:
        page = (await app.client.get("/v1/buses/default/dead-letters", headers=app.admin)).json()
        letters: list[dict[str, Any]] = page["dead_letters"]
        return letters if len(letters) == 6 else None

    async def archived() -> int | None:
        view = (await app.client.get("/v1/buses/default/archives/all", headers=app.admin)).json()
        return 6 if view["events"] == 6 else None

    await eventually(dead_letters)
    await eventually(archived)

    answer = await app.client.post(
        "/v1/erasures",
        headers=app.admin,
        json={"field": "data.userId", "value": "ann", "suppress": True},
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/v1/erasures/{answer.json()['id']}"
    entry = await finished(app, answer.json()["id"])

    assert entry["state"] == "completed", entry
    assert entry["counts"] == {
        "log": 3,
        "archives": 3,
        "failed_events": 1,
        "deliveries": 0,
        "dead_letters": 3,
        "attempts": 3,
    }
    assert entry["requested_by"] == parse_key(app.bootstrap.admin_key).key_id
    assert entry["criterion"] == {"field": "data.userId", "value": "ann"}
    assert (entry["bus"], entry["suppress"]) == (None, True)

    # The log, the archive, the failed events and the dead letters: bob's only.
    assert await logged(services, "default") == ["bob-0", "bob-1", "bob-2"]
    tenant = await services.stores.control.get_tenant("default")
    assert tenant is not None
    record = await services.stores.control.archives.get(tenant.id, "default", "all")
    assert record is not None
    now = datetime.now(UTC)
    copies = await services.stores.archive_store.read_window(
        record.uid, now - timedelta(days=1), now + timedelta(days=1)
    )
    assert [e.id for e in copies] == ["bob-0", "bob-1", "bob-2"]
    view = (await app.client.get("/v1/buses/default/archives/all", headers=app.admin)).json()
    assert view["events"] == 3
    failed = (await app.client.get("/v1/buses/strict/failed-events", headers=app.admin)).json()
    assert [f["event_id"] for f in failed["failed_events"]] == ["bob-bad"]
    letters = (await app.client.get("/v1/buses/default/dead-letters", headers=app.admin)).json()
    assert sorted(d["event_id"] for d in letters["dead_letters"]) == ["bob-0", "bob-1", "bob-2"]

    # An erased event sent again is accepted as a duplicate and kept out, on both buses; a new
    # one of the same user is stored (the suppression names events, not people).
    again = await ingest(app, "default", user_event("ann-0", "ann", plan="free"))
    assert (again["accepted"], again["duplicates"]) == (1, 1)
    again = await ingest(app, "strict", user_event("ann-bad", "ann", plan="?"))
    assert (again["accepted"], again["duplicates"], again["failed"]) == (1, 1, [])
    fresh = await ingest(
        app, "default", user_event("ann-0", "ann", plan="free"), user_event("ann-9", "ann")
    )
    assert (fresh["accepted"], fresh["duplicates"]) == (2, 1)
    assert await logged(services, "default") == ["bob-0", "bob-1", "bob-2", "ann-9"]
    failed = (await app.client.get("/v1/buses/strict/failed-events", headers=app.admin)).json()
    assert [f["event_id"] for f in failed["failed_events"]] == ["bob-bad"]
    metrics = (await app.client.get("/metrics")).text
    assert 'stellwerk_ingest_events_suppressed_total{bus="default",tenant="default"} 2.0' in metrics
    assert 'stellwerk_erasures_total{state="completed"} 1.0' in metrics

    listed = (await app.client.get("/v1/erasures", headers=app.admin)).json()
    assert [e["id"] for e in listed["erasures"]] == [entry["id"]]


async def test_an_erasure_of_one_bus_by_subject_leaves_the_other_buses(
    running_app: RunningApp,
) -> None:
    app = running_app
    await app.client.put("/v1/buses/audit", headers=app.admin)
    for bus in ("default", "audit"):
        await ingest(app, bus, user_event("e1", "ann"), user_event("e2", "bob"))

    answer = await app.client.post(
        "/v1/erasures", headers=app.admin, json={"subject": "account-ann", "bus": "audit"}
    )
    entry = await finished(app, answer.json()["id"])

    assert (entry["state"], entry["counts"]["log"], entry["bus"]) == ("completed", 1, "audit")
    assert await logged(app.services, "audit") == ["e2"]
    assert await logged(app.services, "default") == ["e1", "e2"]
    # No suppression asked for: the erased event is still a duplicate within the dedup window
    # (its key stays), so sending it again stores nothing either.
    again = await ingest(app, "audit", user_event("e1", "ann"))
    assert again["duplicates"] == 1
    assert await logged(app.services, "audit") == ["e2"]


async def test_bad_requests_say_what_is_wrong(running_app: RunningApp) -> None:
    app = running_app
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({}, 400, "subject"),
        ({"subject": "u1", "field": "data.userId", "value": "u1"}, 400, "subject"),
        ({"field": "data.userId"}, 400, "value"),
        ({"field": "data..userId", "value": "u1"}, 400, "field"),
        ({"field": "bus", "value": "default"}, 400, "field"),
        ({"subject": ""}, 400, "subject"),
        ({"subject": "u1", "bus": "no such bus"}, 400, "bus"),
        ({"subject": "u1", "bus": "nosuchbus"}, 404, None),
        ({"subject": 5}, 422, "$.subject"),
        ({"subject": "u1", "everything": True}, 422, None),
    ]
    for body, status, field in cases:
        answer = await app.client.post("/v1/erasures", headers=app.admin, json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json().get("field") == field, (body, answer.text)
        assert answer.json()["message"]

    ingest_only = app.auth(app.bootstrap.ingest_key)
    refused = await app.client.post("/v1/erasures", headers=ingest_only, json={"subject": "u1"})
    assert refused.status_code == 403
    assert (await app.client.get("/v1/erasures", headers=ingest_only)).status_code == 403
    missing = await app.client.get("/v1/erasures/nope", headers=app.admin)
    assert (missing.status_code, missing.json()["error"]) == (404, "NotFound")
    text = await app.client.post(
        "/v1/erasures", headers={**app.admin, "content-type": "text/plain"}, content=b"subject"
    )
    assert text.status_code == 415
    assert (await app.client.get("/v1/erasures", headers=app.admin)).json() == {
        "erasures": [],
        "next_before": None,
    }


async def test_an_erasure_cut_short_by_a_stop_is_resumed_at_the_next_start(
    tmp_path: Path,
) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data")})

    async def started() -> tuple[Any, Services]:
        app = build_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        services: Services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        return lifespan, services

    lifespan, services = await started()
    keys = msgspec.json.decode((settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap)
    tenant = await services.stores.control.get_tenant(keys.tenant)
    assert tenant is not None
    await services.stores.event_log.append(
        [
            NewEvent(tenant.name, "default", f"e{n}", "urn:app", "user.signup", None, body)
            for n, body in enumerate(
                [b'{"id":"e0","data":{"userId":"ann"}}', b'{"id":"e1","data":{"userId":"bob"}}']
            )
        ]
    )
    # What a stop right after the request leaves behind: the entry written, nothing erased yet.
    entry = await services.stores.control.erasures.create(
        tenant.id,
        bus=None,
        criterion={"field": "data.userId", "value": "ann"},
        suppress=False,
        requested_by=None,
    )
    await lifespan.__aexit__(None, None, None)

    lifespan, services = await started()
    try:

        async def done() -> Any:
            record = await services.stores.control.erasures.get(tenant.id, entry.id)
            return record if record is not None and record.state != "running" else None

        record = await eventually(done)
        assert (record.state, record.counts["log"]) == ("completed", 1)
        assert await logged(services, "default") == ["e1"]
    finally:
        await lifespan.__aexit__(None, None, None)
