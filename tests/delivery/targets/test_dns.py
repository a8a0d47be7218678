"""The curl transport's DNS: answers the guard passed, kept a few seconds, one lookup per name."""

from __future__ import annotations

import asyncio

import pytest
from tests.delivery.targets.support import Clock, StaticResolver

from stellwerk.delivery.targets import AddressPolicy, GuardedResolver
from stellwerk.delivery.targets.dns import DNS_CACHE_SECONDS, GuardedAddresses
from stellwerk.delivery.targets.ssrf import UnsafeAddressError

# 127.0.0.2 stands for a public address here; 127.0.0.1 stays loopback.
POLICY = AddressPolicy.build(allowed_networks=["127.0.0.2/32"])


def addresses(resolver: StaticResolver, clock: Clock) -> GuardedAddresses:
    return GuardedAddresses(GuardedResolver(POLICY, resolver), clock=clock)


async def test_an_answer_is_kept_for_its_time_then_asked_again() -> None:
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.2"]})
    clock = Clock()
    cache = addresses(resolver, clock)
    assert await cache.lookup("hooks.example.test", 443) == ("127.0.0.2",)
    clock.advance(DNS_CACHE_SECONDS - 0.1)
    assert await cache.lookup("hooks.example.test", 443) == ("127.0.0.2",)
    assert resolver.asked == ["hooks.example.test"]
    clock.advance(0.2)
    assert await cache.lookup("hooks.example.test", 443) == ("127.0.0.2",)
    assert resolver.asked == ["hooks.example.test"] * 2


async def test_concurrent_lookups_of_one_name_share_one_question() -> None:
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.2"]})
    cache = addresses(resolver, Clock())
    answers = await asyncio.gather(*(cache.lookup("hooks.example.test", 443) for _ in range(5)))
    assert answers == [("127.0.0.2",)] * 5
    assert resolver.asked == ["hooks.example.test"]


async def test_a_name_that_rebinds_to_loopback_is_refused_once_its_answer_expires() -> None:
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.2"]})
    clock = Clock()
    cache = addresses(resolver, clock)
    assert await cache.lookup("hooks.example.test", 443) == ("127.0.0.2",)
    resolver.answers["hooks.example.test"] = ["127.0.0.1"]
    clock.advance(DNS_CACHE_SECONDS + 0.1)
    with pytest.raises(UnsafeAddressError, match=r"127\.0\.0\.1 \(loopback\)"):
        await cache.lookup("hooks.example.test", 443)


async def test_refused_addresses_are_dropped_from_an_answer() -> None:
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.1", "127.0.0.2"]})
    cache = addresses(resolver, Clock())
    assert await cache.lookup("hooks.example.test", 80) == ("127.0.0.2",)


async def test_failures_are_not_kept() -> None:
    resolver = StaticResolver({})
    cache = addresses(resolver, Clock())
    with pytest.raises(OSError, match="no such host"):
        await cache.lookup("hooks.example.test", 443)
    resolver.answers["hooks.example.test"] = ["127.0.0.2"]
    assert await cache.lookup("hooks.example.test", 443) == ("127.0.0.2",)


async def test_a_waiter_that_gives_up_does_not_cancel_the_lookup_for_others() -> None:
    asked, release = asyncio.Event(), asyncio.Event()

    class Slow(StaticResolver):
        async def resolve(self, host, port=0, family=0):  # type: ignore[no-untyped-def]
            asked.set()
            await release.wait()
            return await super().resolve(host, port, family)

    resolver = Slow({"hooks.example.test": ["127.0.0.2"]})
    cache = addresses(resolver, Clock())
    impatient = asyncio.create_task(cache.lookup("hooks.example.test", 443))
    patient = asyncio.create_task(cache.lookup("hooks.example.test", 443))
    await asked.wait()
    impatient.cancel()
    release.set()
    assert await patient == ("127.0.0.2",)
    assert impatient.cancelled()
    await cache.close()
