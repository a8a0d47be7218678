"""With no endpoint or peer the sites duties have nothing to do: they wait for a change of peers
or endpoints (a `capability` change, heard in every process) instead of polling, and start at
once when one comes."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import app_running
from tests.polling import eventually

from stellwerk.capability import Database
from stellwerk.clock import utc_now
from stellwerk.config import load_settings
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Change
from stellwerk.service import CapabilityChanges
from stellwerk.sites import SitesOpened
from stellwerk.sites import failover as failover_module
from stellwerk.sites import replication as replication_module
from stellwerk.sites import standby as standby_module
from stellwerk.sites.model import EndpointInput, HealthPolicy
from stellwerk.sites.opened import MIGRATIONS
from stellwerk.sites.store import CHANGES, SitesStore
from stellwerk.sites.tables import VERSION_TABLE
from stellwerk.storage.control import ControlPlane


async def test_writes_of_peers_and_endpoints_are_heard_once_committed(tmp_path: Path) -> None:
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        database = Database(control.engine, control.changes)
        await database.migrate(MIGRATIONS, version_table=VERSION_TABLE)
        changes = CapabilityChanges()
        heard: list[str] = []
        changes.listen(CHANGES, lambda: heard.append("sites"))
        changes.listen("other", lambda: heard.append("other"))

        async def take(change: Change) -> None:  # as `Caches.take` does
            if change.kind == "capability":
                changes.heard(change.name)

        control.changes.listen(take)
        tenant = await control.create_tenant("acme")
        store = SitesStore(database)
        spec = EndpointInput(primary="a", secondary="b", buses=["default"])
        await store.put_endpoint(tenant.id, "orders", spec, utc_now())
        assert heard == ["sites"]
        # Positions move all the time: a standby that needs them polls them while it stands by.
        await store.put_routed(tenant.id, "a", {"default": 5}, utc_now())
        assert heard == ["sites"]
        await store.delete_endpoint(tenant.id, "orders")
        assert heard == ["sites", "sites"]
        changes.heard(None)  # signals were missed: everyone looks again
        assert sorted(heard) == ["other", "sites", "sites", "sites"]
    finally:
        await control.close()


async def test_a_standby_with_nothing_to_stand_by_for_starts_when_an_endpoint_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the signal can wake them within the test: their safety net is an hour here.
    monkeypatch.setattr(standby_module, "IDLE_SECONDS", 3600.0)
    monkeypatch.setattr(failover_module, "IDLE_SECONDS", 3600.0)
    monkeypatch.setattr(replication_module, "IDLE_SECONDS", 3600.0)
    settings = load_settings({"data_dir": str(tmp_path / "data"), "site": "here"})
    async with app_running(settings) as running:
        opened = running.services.capabilities["sites"]
        assert isinstance(opened, SitesOpened)
        standby = opened.standby
        assert standby is not None
        bus = BusRef(TenantName(running.bootstrap.tenant), "default")
        assert not standby.standing_by(bus)
        (tenant,) = [
            t.id
            for t in await running.services.stores.control.list_tenants()
            if t.name == bus.tenant
        ]
        # A primary that is not there: judged sick only after an hour, so it stays active.
        patient = HealthPolicy(window_seconds=3600, evaluations=100)
        spec = EndpointInput(primary="there", secondary="here", buses=["default"], health=patient)
        await opened.store.put_endpoint(tenant, "orders", spec, utc_now())
        await eventually(lambda: standby.standing_by(bus), what="standing by for the bus")
        # Gone again: the standby reads that at its next refresh and then waits, idle ...
        await opened.store.delete_endpoint(tenant, "orders")
        await eventually(lambda: not standby.standing_by(bus), what="standing by for none")
        # ... until an endpoint is made again: only the change wakes it now.
        await opened.store.put_endpoint(tenant, "orders", spec, utc_now())
        await eventually(lambda: standby.standing_by(bus), what="standing by again")
