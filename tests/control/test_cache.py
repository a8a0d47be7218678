"""The in-process TTL cache: one load per key at a time, expiry, forget during a load."""

from __future__ import annotations

import asyncio

import pytest

from stellwerk.storage import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_load_once_and_expire() -> None:
    clock = Clock()
    loads: list[str] = []
    release = asyncio.Event()

    async def load(key: str) -> str:
        loads.append(key)
        await release.wait()
        return key.upper()

    cache: TtlCache[str, str] = TtlCache(load, ttl=5, clock=clock)
    waiting = [asyncio.ensure_future(cache.get("a")) for _ in range(50)]
    release.set()
    assert await asyncio.gather(*waiting) == ["A"] * 50
    assert loads == ["a"]
    assert await cache.get("a") == "A"
    assert loads == ["a"]
    clock.now = 5.1
    assert await cache.get("a") == "A"
    assert loads == ["a", "a"]


async def test_forget_during_a_load_keeps_the_stale_value_out() -> None:
    versions = iter(["old", "new"])
    started = asyncio.Event()
    release = asyncio.Event()

    async def load(_key: str) -> str:
        value = next(versions)
        started.set()
        await release.wait()
        return value

    cache: TtlCache[str, str] = TtlCache(load, ttl=60)
    first = asyncio.ensure_future(cache.get("k"))
    await started.wait()
    cache.forget("k")  # e.g. the key was revoked while its old record was being read
    release.set()
    assert await first == "old"
    assert await cache.get("k") == "new"


async def test_a_failed_load_is_not_cached() -> None:
    attempts = 0

    async def load(_key: str) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("store down")
        return attempts

    cache: TtlCache[str, int] = TtlCache(load, ttl=60)
    with pytest.raises(ConnectionError):
        await cache.get("k")
    assert await cache.get("k") == 2
