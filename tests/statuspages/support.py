"""Helpers of the status page tests."""

from __future__ import annotations

from typing import Any

import msgspec
from tests.conftest import RunningApp

from stellwerk.refs import BusRef, TenantName
from stellwerk.statuspages.events import INTERNAL_BUS


async def internal_events(app: RunningApp, type_: str | None = None) -> list[dict[str, Any]]:
    """The events on the default tenant's internal bus (of `type_` only, when given)."""
    stored = await app.services.stores.event_log.read(BusRef(TenantName("default"), INTERNAL_BUS))
    decoded = [msgspec.json.decode(e.body) for e in stored]
    return [e for e in decoded if type_ is None or e["type"] == type_]
