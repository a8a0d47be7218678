"""In-process caches with a time to live, loading each key once however many callers ask.

DESIGN.md puts caches behind a seam: in process by default, Redis in front of several processes;
this is the in-process side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MAX_ENTRIES = 100_000


class TtlCache(Generic[K, V]):
    """Values (absence included) loaded on demand and kept for `ttl` seconds."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        # One load per key at a time: when an entry expires under load, the requests in flight
        # wait for that load instead of all asking the control plane at once.
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._refresh(key))
        return await asyncio.shield(loading)

    def fresh(self, key: K) -> V | None:
        """The value held for `key` if it has not expired, else None; never loads."""
        cached = self._entries.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        return None

    async def _refresh(self, key: K) -> V:
        mine = self._loading.get(key)
        try:
            value = await self._load(key)
        except BaseException:
            if self._loading.get(key) is mine:
                del self._loading[key]
            raise
        # A `forget` during the load means the value may predate a change: hand it to the
        # callers that were waiting, but do not keep it.
        if self._loading.get(key) is mine:
            del self._loading[key]
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (self._clock() + self._ttl, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)
        self._loading.pop(key, None)
