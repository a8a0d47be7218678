"""Addresses of target host names that the SSRF guard passed, kept `DNS_CACHE_SECONDS`.

The curl transport resolves every host name here, so libcurl never asks DNS itself. Ten seconds
(aiohttp's default too) spares a busy target a lookup per request and still refuses a name that
rebinds to a private address within seconds. One lookup in flight per name; failures not kept.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Final

from stellwerk.delivery.targets.ssrf import GuardedResolver

DNS_CACHE_SECONDS: Final = 10.0
# Expired answers are swept when the cache grows past this many names.
_SWEEP_AT: Final = 1024

_Key = tuple[str, int]


class GuardedAddresses:
    """`lookup(host, port)`: the allowed addresses of `host`, in the resolver's order.

    Raises what the `GuardedResolver` raises: `UnsafeAddressError` when the policy refuses every
    address, `OSError` when the name does not resolve.
    """

    def __init__(
        self,
        resolver: GuardedResolver,
        *,
        ttl: float = DNS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._ttl = ttl
        self._clock = clock
        self._answers: dict[_Key, tuple[float, tuple[str, ...]]] = {}
        self._pending: dict[_Key, asyncio.Task[tuple[str, ...]]] = {}

    def cached(self, host: str, port: int) -> tuple[str, ...] | None:
        """The addresses `lookup` would answer at once from the cache, or None."""
        found = self._answers.get((host, port))
        if found is not None and found[0] > self._clock():
            return found[1]
        return None

    async def lookup(self, host: str, port: int) -> tuple[str, ...]:
        key = (host, port)
        found = self._answers.get(key)
        if found is not None and found[0] > self._clock():
            return found[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.create_task(self._resolve(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda task: self._settled(key, task))
        # One waiter's timeout must not cancel the lookup the others wait for.
        return await asyncio.shield(pending)

    def _settled(self, key: _Key, task: asyncio.Task[tuple[str, ...]]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            # Marks a failure as seen even when every waiter has gone (timed out) meanwhile.
            task.exception()

    async def _resolve(self, key: _Key) -> tuple[str, ...]:
        host, port = key
        results = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = tuple(dict.fromkeys(result["host"] for result in results))
        now = self._clock()
        if len(self._answers) >= _SWEEP_AT:
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
        self._answers[key] = (now + self._ttl, addresses)
        return addresses

    async def close(self) -> None:
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._answers.clear()
        await self._resolver.close()
