"""Rate limits: token buckets per key at one rate (`TokenBuckets`, in process), and limiters
whose rate comes with each call (a tenant's quota): `LocalLimiter` in process, `SharedLimiter`
in Redis so that every gateway and delivery worker draws on one budget (docs/quotas.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
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
# none, and leasing tokens beyond its own: the time is Redis's own (every process measures
# against one clock), the state one number per key that expires once it no longer matters.
# ARGV: the number of refunds, then each one's rate and tokens (leased tokens a process gives
# back unused); the number of requests, then for each its number of budgets and their rate,
# burst, tokens and the extra tokens wanted as a lease, in turn. KEYS: the refunds' keys, then
# every budget's key in the same order. A request sees the budgets as the requests before it in
# the call left them; a granted request's lease is what room its budget has left, up to the
# extra wanted. The reply: per budget, the wait and the tokens leased.
# Numbers go out as strings: a Lua number in a reply would be truncated to an integer.
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local replies, k, a = {}, 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local tat = tonumber(redis.call('GET', KEYS[k]) or '0')
  tat = tat - tonumber(ARGV[a + 1]) / tonumber(ARGV[a])
  if tat > now then
    redis.call('SET', KEYS[k], string.format('%.6f', tat),
      'PX', math.ceil((tat - now) * 1000) + 1000)
  else
    redis.call('DEL', KEYS[k])
  end
  k = k + 1
  a = a + 2
end
local requests = tonumber(ARGV[a])
a = a + 1
for _ = 1, requests do
  local n = tonumber(ARGV[a])
  a = a + 1
  local tats, refused, first = {}, false, #replies
  for i = 0, n - 1 do
    local rate = tonumber(ARGV[a + 4 * i])
    local burst = tonumber(ARGV[a + 4 * i + 1])
    local tokens = tonumber(ARGV[a + 4 * i + 2])
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
      replies[#replies + 1] = string.format('%.6f', wait)
    else
      replies[#replies + 1] = '0'
    end
    replies[#replies + 1] = '0'
  end
  if not refused then
    for i = 0, n - 1 do
      local tat = tats[i]
      local extra = tonumber(ARGV[a + 4 * i + 3])
      if extra > 0 then
        local interval = 1 / tonumber(ARGV[a + 4 * i])
        local tolerance = tonumber(ARGV[a + 4 * i + 1]) * interval
        local room = math.floor((now + tolerance - tat) / interval + 0.000001)
        if room < extra then extra = room end
        if extra > 0 then
          tat = tat + extra * interval
          replies[first + 2 * i + 2] = tostring(extra)
        end
      end
      redis.call('SET', KEYS[k + i], string.format('%.6f', tat),
        'PX', math.ceil((tat - now) * 1000) + 1000)
    end
  end
  k = k + n
  a = a + 4 * n
end
return replies
"""

# Seconds a call to Redis may take before Redis counts as down, and how long the limiter then
# stays with the per-process budgets before asking Redis again.
REDIS_TIMEOUT: Final = 0.25
REDIS_PAUSE: Final = 1.0

# Leases (docs/quotas.md, "Leases"): a process holds at most this share of a budget's burst
# leased from Redis (1/20: 50 ms of the rate at the default burst of a second), for at most
# LEASE_SECONDS, sized to twice what it handed out of that budget in the last LEASE_SECONDS;
# below LEASE_LEAST tokens in that time a lease is not worth holding: every request asks Redis.
LEASE_SHARE: Final = 0.05
LEASE_SECONDS: Final = 0.05
LEASE_LEAST: Final = 4


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


@dataclass(slots=True)
class _Lease:
    """Tokens of one budget this process holds, leased from Redis, and what it hands out."""

    tokens: float = 0.0  # in hand, not yet handed out
    until: float = 0.0  # they go back to Redis unused then
    rate: float = 0.0  # the rate they were leased at (what a refund gives back)
    asking: bool = False  # a call under way asks for more
    window: float = 0.0  # the start of the current window of LEASE_SECONDS
    used: float = 0.0  # tokens this process took from the budget in the current window
    before: float = 0.0  # ... and in the window before it

    def count(self, tokens: float, now: float) -> None:
        if now - self.window >= LEASE_SECONDS:
            self.before = self.used if now - self.window < 2 * LEASE_SECONDS else 0.0
            self.used = 0.0
            self.window = now
        self.used += tokens


# A call waiting to be sent: its budgets and the future of its answer (none for a refill).
_Waiting = tuple[list[Take], asyncio.Future[list[float] | None] | None]


class SharedLimiter:
    """Every budget in Redis, shared by every process that names the same Redis: one script
    call (one round trip) per `acquire_all`, whatever the number of budgets and tokens, or
    fewer: calls made while one is under way go together in the next, and a budget this
    process draws on often is leased (a slice of it held here and handed out without asking
    Redis, see `LEASE_SHARE`), so that most calls under load make no round trip at all.

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
        lease_share: float = LEASE_SHARE,
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
        self._share = lease_share
        self._clock = clock
        self._paused_until = float("-inf")
        self.shared = True  # the last call reached Redis
        self._waiting: list[_Waiting] = []
        self._sending: asyncio.Task[None] | None = None
        self._leases: dict[str, _Lease] = {}
        self._refunds: list[tuple[str, float, float]] = []  # key, rate, tokens
        self._holding: set[str] = set()  # keys whose lease may hold tokens
        self.leased = 0  # calls answered from leases (for tests and the bench)

    async def acquire_all(self, takes: Sequence[Take]) -> list[float]:
        now = self._clock()
        leases = self._leases
        for take in takes:
            if take.rate > 0:
                lease = leases.get(take.key)
                if lease is None or lease.tokens < take.tokens or lease.until <= now:
                    break
        else:
            # Every budget has the tokens in hand: no round trip, no future.
            self.leased += 1
            for take in takes:
                if take.rate > 0:
                    lease = leases[take.key]
                    lease.tokens -= take.tokens
                    lease.count(take.tokens, now)
                    if not lease.asking and lease.tokens < self._wanted(lease, take) / 2:
                        self._refill(lease, take)
            return [0.0] * len(takes)
        limited = [
            Take(take.key, take.rate, take.tokens, _burst(take.rate, take.burst))
            for take in takes
            if take.rate > 0
        ]
        if not limited:
            return [0.0] * len(takes)
        if now < self._paused_until:
            return self._fallback.take_all(takes)
        answer: asyncio.Future[list[float] | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((limited, answer))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        waits = await answer
        if waits is None:  # Redis out of reach
            return self._fallback.take_all(takes)
        if any(waits):
            given = iter(waits)
            return [next(given) if take.rate > 0 else 0.0 for take in takes]
        now = self._clock()
        for take in limited:
            lease = leases.get(take.key)
            if lease is None:
                if len(leases) >= _MAX_KEYS:
                    leases.clear()  # a bound, not a working set: what they held is lost
                    self._holding.clear()
                lease = leases[take.key] = _Lease()
            lease.count(take.tokens, now)
        return [0.0] * len(takes)

    def _wanted(self, lease: _Lease, take: Take) -> float:
        """The tokens this process should hold of the budget of `take`: twice what it took in
        the last LEASE_SECONDS (a refill, asked once half is handed out, then comes about once
        in LEASE_SECONDS), up to its share of the burst; 0 when that is too few to lease."""
        cap = math.floor(_burst(take.rate, take.burst) * self._share)
        took = max(lease.used, lease.before)
        wanted = min(cap, 2 * took)
        return wanted if took >= LEASE_LEAST and wanted >= LEASE_LEAST else 0.0

    def _refill(self, lease: _Lease, take: Take) -> None:
        """Ask for more of a budget running low, in a call of its own (or with the next)."""
        if self._clock() < self._paused_until:
            return
        lease.asking = True
        self._waiting.append(
            ([Take(take.key, take.rate, 0.0, _burst(take.rate, take.burst))], None)
        )
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())

    def _expired(self, now: float) -> None:
        """Give back what leases past their time still hold, with the call being sent."""
        for key in [*self._holding]:
            lease = self._leases.get(key)
            if lease is None or not lease.tokens:
                self._holding.discard(key)
            elif lease.until <= now:
                self._refunds.append((key, lease.rate, lease.tokens))
                lease.tokens = 0.0
                self._holding.discard(key)

    def _extra(self, take: Take, asked: set[str]) -> float:
        """The tokens to lease with `take` in the call being sent (the first of its key)."""
        lease = self._leases.get(take.key)
        if lease is None or take.key in asked:
            return 0.0
        if lease.asking and take.tokens:
            return 0.0  # a refill is already waiting to be sent
        wanted = self._wanted(lease, take)
        if lease.rate != take.rate and lease.tokens:
            # Leased at another rate: give them back, lease afresh at this one.
            self._refunds.append((take.key, lease.rate, lease.tokens))
            lease.tokens = 0.0
        extra = max(0, math.floor(wanted - lease.tokens))
        lease.asking = bool(extra) or not take.tokens
        if extra:
            asked.add(take.key)
        return float(extra)

    async def _send(self) -> None:
        """Send what is waiting, one script call at a time: requests that arrive while one is
        under way go together in the next (one round trip for many under load)."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                self._expired(self._clock())
                asked: set[str] = set()
                extras = [[self._extra(take, asked) for take in limited] for limited, _ in batch]
                refunds, self._refunds = self._refunds, []
                keys = [self._prefix + key for key, _, _ in refunds]
                args: list[str] = [str(len(refunds))]
                for _, rate, tokens in refunds:
                    args += [repr(rate), repr(tokens)]
                args.append(str(len(batch)))
                for (limited, _), wanted in zip(batch, extras, strict=True):
                    args.append(str(len(limited)))
                    for take, extra in zip(limited, wanted, strict=True):
                        keys.append(self._prefix + take.key)
                        args += [repr(take.rate), repr(take.burst), repr(take.tokens), repr(extra)]
                try:
                    answer = await self._script(keys=keys, args=args)
                except (RedisError, OSError, TimeoutError) as exc:
                    self._out_of_reach(exc)
                    for limited, future in batch:
                        for take in limited:
                            lease = self._leases.get(take.key)
                            if lease is not None:
                                lease.asking = False
                        if future is not None and not future.done():
                            future.set_result(None)
                    continue
                if not self.shared:
                    self.shared = True
                    if self._metrics is not None:
                        self._metrics.shared.set(1)
                    log.info("rate limits: Redis answers again; limits are shared once more")
                replies = iter(answer)
                until = self._clock() + LEASE_SECONDS
                for (limited, future), wanted in zip(batch, extras, strict=True):
                    given: list[float] = []
                    for take, extra in zip(limited, wanted, strict=True):
                        given.append(float(next(replies)))
                        leased = float(next(replies))
                        if extra or not take.tokens:
                            lease = self._leases[take.key]
                            lease.asking = False
                            if leased:
                                self._holding.add(take.key)
                                lease.tokens += leased
                                lease.until = until
                                lease.rate = take.rate
                    if future is not None and not future.done():
                        future.set_result(given)
        except BaseException:
            for _, future in self._waiting:
                if future is not None and not future.done():
                    future.set_result(None)
            self._waiting = []
            raise
        finally:
            self._sending = None

    async def acquire(
        self, key: str, rate: float, tokens: float = 1.0, burst: float | None = None
    ) -> float:
        return (await self.acquire_all([Take(key, rate, tokens, burst)]))[0]

    def held(self, key: str) -> float:
        """Tokens of the budget of `key` this process holds leased (expired ones included)."""
        lease = self._leases.get(key)
        return 0.0 if lease is None else lease.tokens

    async def settled(self) -> None:
        """Once every call under way or waiting (a refill too) is answered."""
        while self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)

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
        """Wait for the call under way, give back the tokens leased and unused, and close."""
        await self.settled()
        refunds = [*self._refunds]
        refunds += [
            (k, lease.rate, lease.tokens) for k, lease in self._leases.items() if lease.tokens
        ]
        self._leases.clear()
        if refunds and self._clock() >= self._paused_until:
            args = [str(len(refunds))]
            for _, rate, tokens in refunds:
                args += [repr(rate), repr(tokens)]
            args.append("0")
            # Unreachable: they expire with their keys; only fewer were granted.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._script(keys=[self._prefix + k for k, _, _ in refunds], args=args)
        await self._client.aclose()
