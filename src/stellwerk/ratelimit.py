"""Rate limits: token buckets per key at one rate (`TokenBuckets`, in process), and limiters
whose rate comes with each call (a tenant's quota): `LocalLimiter` in process, `SharedLimiter`
in Redis so that every gateway and delivery worker draws on one budget (docs/quotas.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = structlog.get_logger("stellwerk")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """`rate` tokens per second up to `burst`, one bucket per key; `rate <= 0` means unlimited."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, tokens: float = 1.0) -> float:
        """Take `tokens` from the bucket of `key`: 0.0 when granted, else seconds until they are."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=self.burst, updated=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if tokens > self.burst:
            # Never grantable: say how long a full bucket takes, the caller reports a limit breach.
            return self.burst / self.rate
        if bucket.tokens >= tokens:
            bucket.tokens -= tokens
            return 0.0
        return (tokens - bucket.tokens) / self.rate


# A wait this short is a rounding error of the arithmetic (a time of day plus and minus the same
# interval), not a refusal: the Redis script stores times to the microsecond.
_SLACK: Final = 1e-6

# Keys a process keeps at most (a bound, not a working set): past it, the table starts over.
_MAX_KEYS: Final = 100_000


def _burst(rate: float, burst: float | None) -> float:
    return burst if burst is not None else max(rate, 1.0)


@dataclass(frozen=True, slots=True)
class Spent:
    """A refused take: the rate that applied and the seconds until the tokens would be there."""

    rate: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Take:
    """`tokens` at `rate` per second (up to `burst`, one second's worth by default) from the
    budget of `key`; `rate <= 0` means unlimited."""

    key: str
    rate: float
    tokens: float = 1.0
    burst: float | None = None


class Limiter(Protocol):
    """Rate limits whose rate comes with each call (a tenant's own, changed at any time)."""

    async def acquire_all(self, takes: Sequence[Take]) -> list[float]:
        """Take every one of `takes`, or none: the seconds each still has to wait, all 0.0
        when granted (and taken)."""
        ...


class LocalLimiter:
    """GCRA in process: per key, the theoretical arrival time of the next token (`tat`).

    The same arithmetic as the Redis script of `SharedLimiter`, so falling back changes where
    the state lives, not what a rate means. A request for more than `burst` tokens is never
    granted: the answer is how long a full budget takes. What is owed is time: a rate raised
    from below 1/s (owing more than a budget at the new rate could) starts with a full budget.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    def take(self, key: str, rate: float, tokens: float = 1.0, burst: float | None = None) -> float:
        return self.take_all([Take(key, rate, tokens, burst)])[0]

    def take_all(self, takes: Sequence[Take]) -> list[float]:
        now = self._clock()
        waits: list[float] = []
        after: list[tuple[str, float]] = []
        for take in takes:
            if take.rate <= 0:
                waits.append(0.0)
                continue
            interval = 1.0 / take.rate
            tolerance = _burst(take.rate, take.burst) * interval
            if take.tokens * interval > tolerance:
                waits.append(tolerance)
                continue
            tat = max(self._tat.get(take.key, now), now)
            if tat > now + tolerance:
                # More owed than a budget at this rate could be: spent at a rate below 1/s,
                # raised since. The raised quota starts afresh, not after the old rate's time.
                tat = now
            tat += take.tokens * interval
            wait = tat - tolerance - now
            waits.append(wait if wait > _SLACK else 0.0)
            after.append((take.key, tat))
        if any(waits):
            return waits
        if len(self._tat) >= _MAX_KEYS:
            self._tat.clear()
        self._tat.update(after)
        return waits

    async def acquire_all(self, takes: Sequence[Take]) -> list[float]:
        return self.take_all(takes)

    async def acquire(
        self, key: str, rate: float, tokens: float = 1.0, burst: float | None = None
    ) -> float:
        return self.take(key, rate, tokens, burst)


# GCRA in one round trip for any number of requests, each taking any number of budgets all or
# none: the time is Redis's own (every process measures against one clock), the state one
# number per key that expires once it no longer matters. ARGV: the number of requests, then for
# each its number of budgets and their rate, burst and tokens in turn; KEYS: every budget's key
# in the same order. A request sees the budgets as the requests before it in the call left them.
# Numbers go out as strings: a Lua number in a reply would be truncated to an integer.
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local waits, k, a = {}, 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local tats, refused = {}, false
  for i = 0, n - 1 do
    local rate = tonumber(ARGV[a + 3 * i])
    local burst = tonumber(ARGV[a + 3 * i + 1])
    local tokens = tonumber(ARGV[a + 3 * i + 2])
    local interval = 1 / rate
    local tolerance = burst * interval
    local wait = 0
    if tokens * interval > tolerance then
      wait = tolerance
    else
      local tat = tonumber(redis.call('GET', KEYS[k + i]) or '0')
      if tat < now then tat = now end
      if tat > now + tolerance then tat = now end
      tat = tat + tokens * interval
      tats[i] = tat
      wait = tat - tolerance - now
    end
    if wait > 0.000001 then
      refused = true
      waits[#waits + 1] = string.format('%.6f', wait)
    else
      waits[#waits + 1] = '0'
    end
  end
  if not refused then
    for i = 0, n - 1 do
      local tat = tats[i]
      redis.call('SET', KEYS[k + i], string.format('%.6f', tat),
        'PX', math.ceil((tat - now) * 1000) + 1000)
    end
  end
  k = k + n
  a = a + 3 * n
end
return waits
"""

# Seconds a call to Redis may take before Redis counts as down, and how long the limiter then
# stays with the per-process budgets before asking Redis again.
REDIS_TIMEOUT: Final = 0.25
REDIS_PAUSE: Final = 1.0


class LimiterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.errors = Counter(
            "stellwerk_ratelimit_redis_errors_total",
            "Calls to the shared rate limiter (Redis) that failed: those requests were limited "
            "per process instead.",
            registry=registry,
        )
        self.shared = Gauge(
            "stellwerk_ratelimit_shared",
            "1 while rate limits are shared through Redis, 0 while they fell back to this process.",
            registry=registry,
        )
        self.shared.set(1)


class SharedLimiter:
    """Every budget in Redis, shared by every process that names the same Redis: one script
    call (one round trip) per `acquire_all`, whatever the number of budgets and tokens, or
    fewer: calls made while one is under way go together in the next.

    Redis out of reach never fails a request: the call is answered by the per-process
    `fallback`, with a warning the first time and a metric each time, and Redis is asked again
    after `pause` seconds. N processes then allow up to N times the rate until Redis answers.
    """

    def __init__(
        self,
        url: str,
        *,
        metrics: LimiterMetrics | None = None,
        fallback: LocalLimiter | None = None,
        prefix: str = "stellwerk:rate:",
        timeout: float = REDIS_TIMEOUT,
        pause: float = REDIS_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # No retries: the client's default (ten, backing off up to seconds) would hold the
        # request; a failed call is answered by the fallback at once instead.
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._client.register_script(_GCRA)
        self._metrics = metrics
        self._fallback = fallback or LocalLimiter(clock)
        self._prefix = prefix
        self._pause = pause
        self._clock = clock
        self._paused_until = float("-inf")
        self.shared = True  # the last call reached Redis
        self._waiting: list[tuple[list[Take], asyncio.Future[list[float] | None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def acquire_all(self, takes: Sequence[Take]) -> list[float]:
        limited = [
            Take(take.key, take.rate, take.tokens, _burst(take.rate, take.burst))
            for take in takes
            if take.rate > 0
        ]
        if not limited:
            return [0.0] * len(takes)
        if self._clock() < self._paused_until:
            return self._fallback.take_all(takes)
        answer: asyncio.Future[list[float] | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((limited, answer))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        waits = await answer
        if waits is None:  # Redis out of reach
            return self._fallback.take_all(takes)
        given = iter(waits)
        return [next(given) if take.rate > 0 else 0.0 for take in takes]

    async def _send(self) -> None:
        """Send what is waiting, one script call at a time: requests that arrive while one is
        under way go together in the next (one round trip for many under load)."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                keys: list[str] = []
                args: list[str] = [str(len(batch))]
                for limited, _ in batch:
                    args.append(str(len(limited)))
                    for take in limited:
                        keys.append(self._prefix + take.key)
                        args += [repr(take.rate), repr(take.burst), repr(take.tokens)]
                try:
                    answer = await self._script(keys=keys, args=args)
                except (RedisError, OSError, TimeoutError) as exc:
                    self._out_of_reach(exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
                    continue
                if not self.shared:
                    self.shared = True
                    if self._metrics is not None:
                        self._metrics.shared.set(1)
                    log.info("rate limits: Redis answers again; limits are shared once more")
                waits = iter(answer)
                for limited, future in batch:
                    given = [float(next(waits)) for _ in limited]
                    if not future.done():
                        future.set_result(given)
        except BaseException:
            for _, future in self._waiting:
                if not future.done():
                    future.set_result(None)
            self._waiting = []
            raise
        finally:
            self._sending = None

    async def acquire(
        self, key: str, rate: float, tokens: float = 1.0, burst: float | None = None
    ) -> float:
        return (await self.acquire_all([Take(key, rate, tokens, burst)]))[0]

    def _out_of_reach(self, exc: BaseException) -> None:
        self._paused_until = self._clock() + self._pause
        if self._metrics is not None:
            self._metrics.errors.inc()
            self._metrics.shared.set(0)
        if self.shared:
            self.shared = False
            log.warning(
                "rate limits: Redis cannot be reached; limiting per process until it answers",
                error=str(exc) or type(exc).__name__,
            )

    async def close(self) -> None:
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)
        await self._client.aclose()
