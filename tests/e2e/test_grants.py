"""Bus targets into another tenant's bus: only with a grant, and a revoked grant stops them."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import RunningApp
from tests.e2e.test_delivery import ORDER, send

from stellwerk.refs import BusRef, TenantName
from stellwerk.service import provision_tenant


async def test_cross_tenant_bus_targets_need_a_grant(delivering_app: RunningApp) -> None:
    app = delivering_app
    partner = await provision_tenant(app.services.stores.control, "partner")
    theirs = app.auth(partner.admin_key)
    await app.client.put("/v1/buses/inbox", headers=theirs)
    rule: dict[str, Any] = {
        "pattern": {"type": ["order.created"]},
        "targets": [{"id": "out", "type": "bus", "tenant": "partner", "bus": "inbox"}],
    }
    refused = await app.client.put("/v1/buses/default/rules/share", headers=app.admin, json=rule)
    assert refused.status_code == 400
    assert refused.json()["field"] == "targets[0].tenant"
    # The same answer for a tenant that does not exist: nothing about other tenants leaks.
    ghost = {**rule, "targets": [{**rule["targets"][0], "tenant": "nobody"}]}
    unknown = await app.client.put("/v1/buses/default/rules/share", headers=app.admin, json=ghost)
    assert unknown.json()["message"].replace("nobody", "partner") == refused.json()["message"]

    # Only the bus owner grants; a grant names a tenant that exists.
    assert (
        await app.client.put("/v1/buses/inbox/grants/default", headers=app.admin)
    ).status_code == 404
    granted = await app.client.put("/v1/buses/inbox/grants/default", headers=theirs)
    assert granted.status_code == 201
    listed = await app.client.get("/v1/buses/inbox/grants", headers=theirs)
    assert listed.json() == {"tenants": ["default"]}

    saved = await app.client.put("/v1/buses/default/rules/share", headers=app.admin, json=rule)
    assert saved.status_code == 201, saved.text
    await send(app, {**ORDER, "id": "shared-1"})

    async def arrived(event_id: str) -> None:
        while not any(
            e.id == event_id
            for e in await app.services.stores.event_log.read(
                BusRef(TenantName("partner"), "inbox")
            )
        ):
            await app.services.stores.log_watch.wait(BusRef(TenantName("partner"), "inbox"), 0.5)

    await asyncio.wait_for(arrived("shared-1"), 30)
    stored = await app.services.stores.event_log.read(BusRef(TenantName("partner"), "inbox"))
    assert stored[0].tenant == "partner"

    revoked = await app.client.delete("/v1/buses/inbox/grants/default", headers=theirs)
    assert revoked.status_code == 204
    await send(app, {**ORDER, "id": "shared-2"})

    async def dead() -> list[Any]:
        while True:
            page = (
                await app.client.get("/v1/buses/default/dead-letters", headers=app.admin)
            ).json()
            letters: list[Any] = page["dead_letters"]
            if letters:
                return letters
            await asyncio.sleep(0.05)

    (letter,) = await asyncio.wait_for(dead(), 30)
    assert letter["event_id"] == "shared-2"
    assert "no longer grants" in letter["last_error"]
    assert [
        e.id
        for e in await app.services.stores.event_log.read(BusRef(TenantName("partner"), "inbox"))
    ] == ["shared-1"]
