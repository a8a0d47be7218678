"""Suppression at ingest: events an erasure asked to keep out are accepted and not stored.

Ingest is the hot path, so a bus without suppressions must cost (almost) nothing: whether a bus
has any is cached per bus for `ttl` seconds, and only a bus that has some pays one query per
request for the keys of that request's events. An erasure in this process makes its new
suppressions count at once (`forget`); one in another process, within `ttl` seconds.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from prometheus_client import Counter

from stellwerk.ops import Metrics
from stellwerk.refs import TenantId
from stellwerk.storage import TtlCache
from stellwerk.storage.control import ErasureStore


class Keyed(Protocol):
    """An incoming event as far as suppression cares: its key."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...


E = TypeVar("E", bound=Keyed)


class Suppressions:
    def __init__(self, store: ErasureStore, metrics: Metrics, *, ttl: float = 5.0) -> None:
        async def load(key: tuple[TenantId, str]) -> bool:
            return await store.has_suppressions(*key)

        self._store = store
        self._any: TtlCache[tuple[TenantId, str], bool] = TtlCache(load, ttl)
        self._suppressed = Counter(
            "stellwerk_ingest_events_suppressed_total",
            "Events answered as accepted but not stored: an erasure keeps their id out.",
            ["tenant", "bus"],
            registry=metrics.registry,
        )

    def none_held(self, tenant_id: TenantId, bus: str) -> bool:
        """True when the cache holds that the bus has no suppression: `drop` would keep every
        event. False: ask `drop`."""
        return self._any.fresh((tenant_id, bus)) is False

    async def drop(
        self, tenant_id: TenantId, tenant: str, bus: str, events: list[E]
    ) -> tuple[list[E], int]:
        """The events that may be stored (`events` itself when none is kept out), and how many
        were kept out."""
        if not events:
            return events, 0
        key = (tenant_id, bus)
        # What the cache holds, without a coroutine per request; loaded when it holds nothing.
        held = self._any.fresh(key)
        if not (await self._any.get(key) if held is None else held):
            return events, 0
        kept_out = await self._store.suppressed(tenant_id, bus, [(e.source, e.id) for e in events])
        if not kept_out:
            return events, 0
        kept = [e for e in events if (e.source, e.id) not in kept_out]
        dropped = len(events) - len(kept)
        self._suppressed.labels(tenant, bus).inc(dropped)
        return kept, dropped

    def forget(self, tenant_id: TenantId, bus: str) -> None:
        """The bus's suppressions changed: look again at the next request."""
        self._any.forget((tenant_id, bus))
