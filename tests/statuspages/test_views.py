"""The read model (`PageView`) over the whole app, on SQLite and PostgreSQL: components in
display order, the derived indicator, an audience's narrowed view and the page's last change."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import RunningApp

from stellwerk.refs import TenantId
from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.model import Indicator
from stellwerk.statuspages.views import incident_view, page_view


async def opened_and_tenant(app: RunningApp) -> tuple[StatusPagesOpened, TenantId]:
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    return opened, tenant.id


async def test_a_page_view_shows_components_in_order_and_the_worst_status(
    running_app: RunningApp,
) -> None:
    app = running_app
    put = app.client.put
    assert (
        await put("/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"})
    ).status_code == 201
    for component, body in {
        "web": {"name": "Web", "group": "Edge", "position": 2},
        "cdn": {"name": "CDN", "group": "Edge", "position": 1},
        "api": {"name": "API", "group": "Core", "status": "partial_outage"},
    }.items():
        made = await put(
            f"/v1/status-pages/acme/components/{component}", headers=app.admin, json=body
        )
        assert made.status_code == 201, made.text
    opened, tenant_id = await opened_and_tenant(app)
    page = await opened.pages.page(tenant_id, "acme")
    now = datetime.now(UTC)

    view = await page_view(opened.pages.store, tenant_id, page, now=now)
    assert [c.id for c in view.components] == ["api", "cdn", "web"]  # by group, then position
    assert view.indicator is Indicator.MAJOR
    assert view.description == "Partial System Outage"
    assert view.unresolved == view.history == view.maintenance_history == []
    assert view.active_maintenance == view.upcoming_maintenance == []
    assert view.updated_at == max(c.updated_at for c in view.components)

    edge = await page_view(
        opened.pages.store, tenant_id, page, now=now, components=frozenset({"cdn", "web"})
    )
    assert [c.id for c in edge.components] == ["cdn", "web"]
    assert edge.indicator is Indicator.NONE
    assert edge.description == "All Systems Operational"
    assert await incident_view(opened.pages.store, tenant_id, page, "nosuchincident") is None
