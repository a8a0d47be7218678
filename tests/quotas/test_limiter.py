"""The limiters: GCRA in process, the same in Redis shared by several limiters (processes), and
the fallback to per-process limits while Redis is out of reach."""

from __future__ import annotations

import asyncio

import pytest
import redis
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from tests.quotas.conftest import REDIS_PORT
from tests.tcp_proxy import TcpProxy

from stellwerk.ratelimit import (
    LEASE_SECONDS,
    LimiterMetrics,
    LocalLimiter,
    SharedLimiter,
    Take,
)


def shared(limiter: SharedLimiter) -> bool:
    return limiter.shared


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gcra_grants_a_burst_then_one_token_per_interval() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    assert [limiter.take("a", rate=2) for _ in range(2)] == [0.0, 0.0]  # burst: a second's worth
    assert limiter.take("a", rate=2) == pytest.approx(0.5)
    assert limiter.take("b", rate=2) == 0.0  # every key its own budget
    clock.now += 0.5
    assert limiter.take("a", rate=2) == 0.0
    assert limiter.take("a", rate=2) == pytest.approx(0.5)


def test_a_batch_takes_its_size_and_one_beyond_the_burst_is_never_granted() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    assert limiter.take("a", rate=10, tokens=7) == 0.0
    assert limiter.take("a", rate=10, tokens=4) == pytest.approx(0.1)
    assert limiter.take("a", rate=10, tokens=3) == 0.0
    assert limiter.take("z", rate=10, tokens=11) == pytest.approx(1.0)  # a full budget's time
    assert limiter.take("z", rate=10, tokens=10) == 0.0  # and it took nothing
    assert limiter.take("u", rate=0, tokens=1e9) == 0.0  # 0: unlimited


def test_a_rate_changed_applies_to_the_next_call() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    assert limiter.take("a", rate=1) == 0.0
    assert limiter.take("a", rate=1) == pytest.approx(1.0)
    # What is owed is time: once it has passed, the budget is a second's worth at the new rate.
    clock.now += 1.0
    assert limiter.take("a", rate=100, tokens=100) == 0.0
    assert limiter.take("a", rate=1) == pytest.approx(1.0)  # lowered: the 1 s owed must pass
    # Spent at 1 per 1000 s, then raised: a full budget at once, not after the old one's time.
    assert limiter.take("b", rate=0.001) == 0.0
    assert limiter.take("b", rate=0.001) == pytest.approx(1000)
    assert limiter.take("b", rate=100, tokens=100) == 0.0
    assert limiter.take("b", rate=100) == pytest.approx(0.01)


async def test_two_limiters_on_one_redis_grant_the_rate_once_not_twice(
    redis_url: str, prefix: str
) -> None:
    # A rate so low that nothing refills during the test: only the burst of 10 is there.
    shared = [SharedLimiter(redis_url, prefix=prefix) for _ in range(2)]
    local = [LocalLimiter() for _ in range(2)]
    try:
        granted = [await shared[n % 2].acquire("t", rate=0.001, burst=10) == 0 for n in range(20)]
        assert sum(granted) == 10
        assert granted[10:] == [False] * 10
        # Per process (no Redis), each of the two grants its own 10.
        assert sum(local[n % 2].take("t", rate=0.001, burst=10) == 0 for n in range(20)) == 20
        # A batch is one call: 10 tokens refused at once, whoever asks.
        assert await shared[0].acquire("u", rate=0.001, tokens=10, burst=10) == 0
        assert await shared[1].acquire("u", rate=0.001, tokens=1, burst=10) > 0
    finally:
        for limiter in shared:
            await limiter.close()


def commands_run(client: redis.Redis) -> dict[str, int]:
    """Commands the Redis has run by name (those a script runs included), but INFO."""
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_each_acquire_is_one_command_on_redis(own_redis: int) -> None:
    # No leases: every call asks Redis (leases: the tests below).
    limiter = SharedLimiter(f"redis://127.0.0.1:{own_redis}/0", lease_share=0)
    watcher = redis.Redis(port=own_redis)
    try:
        await limiter.acquire("warm", rate=5)  # connects and loads the script
        before = commands_run(watcher)
        for n in range(20):
            await limiter.acquire(f"k{n % 3}", rate=100, tokens=n + 1, burst=1000)
        after = commands_run(watcher)
        ran = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
        ran.pop("info", None)
        # One EVALSHA a call, the round trip; inside it the script reads the time and the key
        # and writes the key (all granted here).
        assert ran == {"evalsha": 20, "time": 20, "get": 20, "set": 20}
    finally:
        watcher.close()
        await limiter.close()


async def test_redis_out_of_reach_falls_back_per_process_and_recovers(
    redis_url: str, prefix: str
) -> None:
    clock = Clock()
    registry = CollectorRegistry()
    metrics = LimiterMetrics(registry)
    other = SharedLimiter(redis_url, prefix=prefix)  # another process, always reaching Redis
    with TcpProxy(REDIS_PORT) as proxy:
        limiter = SharedLimiter(
            f"redis://127.0.0.1:{proxy.port}/0",
            prefix=prefix,
            metrics=metrics,
            clock=clock,
            pause=1.0,
        )
        try:
            assert await limiter.acquire("t", rate=0.001, burst=2) == 0
            assert await other.acquire("t", rate=0.001, burst=2) == 0
            assert await limiter.acquire("t", rate=0.001, burst=2) > 0  # shared: both spent it
            assert shared(limiter)

            proxy.cut()
            with capture_logs() as logs:
                # Never an error: the process's own budget answers (2 fresh tokens here).
                answers = [await limiter.acquire("t", rate=0.001, burst=2) for _ in range(3)]
            assert answers[:2] == [0.0, 0.0]
            assert answers[2] > 0
            assert not shared(limiter)
            assert registry.get_sample_value("stellwerk_ratelimit_shared") == 0
            errors = registry.get_sample_value("stellwerk_ratelimit_redis_errors_total")
            assert errors == 1  # then paused: Redis is not asked again within the pause
            warnings = [e for e in logs if e["log_level"] == "warning"]
            assert len(warnings) == 1
            assert "cannot be reached" in warnings[0]["event"]

            proxy.restore()
            clock.now += 1.0  # the pause is over: Redis is asked again
            with capture_logs() as logs:
                # Redis's budget again: spent by the two grants before the cut.
                assert await limiter.acquire("t", rate=0.001, burst=2) > 0
            assert shared(limiter)
            assert registry.get_sample_value("stellwerk_ratelimit_shared") == 1
            assert any("answers again" in e["event"] for e in logs)
        finally:
            await limiter.close()
            await other.close()


async def test_several_budgets_are_taken_all_or_none(redis_url: str, prefix: str) -> None:
    shared = SharedLimiter(redis_url, prefix=prefix)
    local = LocalLimiter(Clock())
    try:
        for limiter in (shared, local):
            # Requests 0.001/s (one left), events 0.001/s with a burst of 5.
            takes = [Take("rq", 0.001), Take("ev", 0.001, tokens=3, burst=5)]
            assert await limiter.acquire_all(takes) == [0.0, 0.0]
            refused = await limiter.acquire_all([Take("rq", 0.001), Take("ev", 0.001, 1, 5)])
            assert refused[0] > 0
            assert refused[1] == 0.0  # it had room, and took none: all or none
            assert await limiter.acquire("ev", 0.001, tokens=2, burst=5) == 0.0
            assert await limiter.acquire("ev", 0.001, tokens=1, burst=5) > 0
            unlimited = [Take("rq", 0), Take("free", 0, tokens=1e6)]
            assert await limiter.acquire_all(unlimited) == [0.0, 0.0]
    finally:
        await shared.close()


async def test_calls_made_while_one_is_under_way_go_together(own_redis: int) -> None:
    limiter = SharedLimiter(f"redis://127.0.0.1:{own_redis}/0")
    watcher = redis.Redis(port=own_redis)
    try:
        await limiter.acquire("warm", rate=5)
        before = commands_run(watcher).get("evalsha", 0)
        # 50 requests at once, each with its request and event budgets: 30 may pass.
        answers = await asyncio.gather(
            *(
                limiter.acquire_all([Take("rq", 0.001, 1, 30), Take("ev", 0.001, 2, 100)])
                for _ in range(50)
            )
        )
        assert sum(waits == [0.0, 0.0] for waits in answers) == 30
        assert all(waits[0] > 0 for waits in answers[30:])  # in the order they were asked
        calls = commands_run(watcher)["evalsha"] - before
        assert 1 <= calls < 50
    finally:
        watcher.close()
        await limiter.close()


async def test_leases_answer_most_calls_and_two_processes_still_grant_the_budget_once(
    own_redis: int,
) -> None:
    url = f"redis://127.0.0.1:{own_redis}/0"
    watcher = redis.Redis(port=own_redis)
    # No refill during the test (0.001/s): the burst of 1000 is all there is. A lease is at
    # most 1/20 of it, 50 tokens. The processes' clocks stand still: every call is in one
    # window of demand, and no lease runs out (the next test lets one).
    first, second = SharedLimiter(url, clock=Clock()), SharedLimiter(url, clock=Clock())
    counter = SharedLimiter(url, lease_share=0)
    try:
        before = commands_run(watcher).get("evalsha", 0)
        granted = 0
        for _ in range(600):
            for limiter in (first, second):
                granted += await limiter.acquire("t", rate=0.001, burst=1000) == 0
        assert granted <= 1000
        assert first.leased + second.leased > 800  # answered from leases, no round trip
        assert commands_run(watcher)["evalsha"] - before < 400
        assert first.held("t") <= 50
        assert second.held("t") <= 50
        # Closing gives back what each held unused: the budget was granted exactly once.
        await first.close()
        await second.close()
        while await counter.acquire("t", rate=0.001, burst=1000) == 0:
            granted += 1
        assert granted == 1000
    finally:
        watcher.close()
        for limiter in (first, second, counter):
            await limiter.close()


async def test_a_lease_unused_past_its_time_goes_back_to_redis(redis_url: str, prefix: str) -> None:
    clock = Clock()
    limiter = SharedLimiter(redis_url, prefix=prefix, clock=clock)
    other = SharedLimiter(redis_url, prefix=prefix, lease_share=0)
    try:
        # Burst 100: a lease is up to 5 tokens, once this process takes 4 in a window.
        for _ in range(8):
            assert await limiter.acquire("t", rate=0.001, burst=100) == 0
        await limiter.settled()
        held = limiter.held("t")
        assert 0 < held <= 5
        clock.now += LEASE_SECONDS
        # Expired: given back with the process's next call to Redis, whichever budget it is for.
        assert await limiter.acquire("u", rate=0.001, burst=100) == 0
        assert limiter.held("t") == 0
        left = 0
        while await other.acquire("t", rate=0.001, burst=100) == 0:
            left += 1
        assert left == 100 - 8
        leased = limiter.leased
        assert await limiter.acquire("t", rate=0.001, burst=100) > 0
        assert limiter.leased == leased
    finally:
        await limiter.close()
        await other.close()


async def test_a_request_is_answered_from_leases_only_if_all_its_budgets_have_them(
    redis_url: str, prefix: str
) -> None:
    limiter = SharedLimiter(redis_url, prefix=prefix, clock=Clock())
    other = SharedLimiter(redis_url, prefix=prefix, lease_share=0)
    try:
        both = [Take("rq", 0.001, 1, 100), Take("ev", 0.001, 3, 1000)]
        for _ in range(10):
            assert await limiter.acquire_all(both) == [0.0, 0.0]
        await limiter.settled()
        assert limiter.held("rq") > 0
        assert limiter.held("ev") > 0
        # Another process spends the rest of the request budget in Redis; this one can still
        # take what it holds, then is refused for both budgets at once, taking neither.
        while await other.acquire("rq", 0.001, 1, 100) == 0:
            pass
        held = limiter.held("rq")
        answers = [await limiter.acquire_all(both) for _ in range(int(held) + 1)]
        assert answers[:-1] == [[0.0, 0.0]] * int(held)
        assert answers[-1][0] > 0
        assert answers[-1][1] == 0.0
    finally:
        await limiter.close()
        await other.close()
