"""Rate limits on the password attempts of private and audience pages, before any hashing.

A guesser is limited per page and client address and per page; those budgets are shared by
every process of the deployment (`SharedLimits`, in the capability's database), so N gateways
allow what one does. The limit on all attempts together stays in each process: it caps the
CPU that scrypt hashing costs that process, which is the process's own.

The shared limits are GCRA (the generic cell rate algorithm, a token bucket kept as one number
a key): the time at which the bucket would be full again. An attempt is one conditional UPDATE,
atomic on SQLite and PostgreSQL alike, so two gateways never both take the last token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.clock import to_us, utc_now
from stellwerk.ratelimit import TokenBuckets
from stellwerk.service import TooManyRequests
from stellwerk.statuspages.tables import login_limits

SWEEP_SECONDS: Final = 60.0  # how often a process deletes the keys that are full again


@dataclass(frozen=True, slots=True)
class Rate:
    """`burst` attempts at once, then one every `every` seconds."""

    burst: int
    every: float


PER_CLIENT: Final = Rate(burst=10, every=6.0)  # per page and client address
PER_PAGE: Final = Rate(burst=30, every=1.0)
IN_ALL: Final = Rate(burst=40, every=0.05)  # per process: its CPU


class SharedLimits(Protocol):
    async def take(self, key: str, rate: Rate) -> float:
        """Count one attempt of `key`: 0.0 when allowed, else seconds until one is."""
        ...


class DatabaseLimits:
    """GCRA in a table (`sp_login_limits`): `tat` is when the key's bucket is full again."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        self._swept = 0  # µs of the clock: when this process last swept

    async def take(self, key: str, rate: Rate) -> float:
        now = to_us(self._clock())
        every = int(rate.every * 1_000_000)
        allowance = rate.burst * every
        now_ = sa.literal(now, sa.BigInteger)
        start = sa.case((login_limits.c.tat > now_, login_limits.c.tat), else_=now_)
        for _ in range(2):  # a second round only when another process inserted the key first
            async with self._engine.begin() as conn:
                taken = await conn.execute(
                    login_limits.update()
                    .where(
                        (login_limits.c.key == key)
                        & (start + every - now_ <= sa.literal(allowance, sa.BigInteger))
                    )
                    .values(tat=start + every)
                )
                if taken.rowcount:
                    return 0.0
                found = (
                    await conn.execute(
                        sa.select(login_limits.c.tat).where(login_limits.c.key == key)
                    )
                ).scalar()
                if found is not None:
                    tat = int(found)
                    return (max(tat, now) + every - allowance - now) / 1_000_000
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(login_limits.insert().values(key=key, tat=now + every))
            except IntegrityError:
                continue
            await self._sweep(now)
            return 0.0
        return rate.every  # inserted and taken by others twice over: a busy key

    async def _sweep(self, now: int) -> None:
        """Delete the keys whose buckets are full again (they mean what no row means), at most
        every `SWEEP_SECONDS` in each process, so the table holds only recent guessers."""
        if now - self._swept < SWEEP_SECONDS * 1_000_000:
            return
        self._swept = now
        async with self._engine.begin() as conn:
            await conn.execute(login_limits.delete().where(login_limits.c.tat <= now))


class Attempts:
    """The limits a login attempt passes: the process's own first (cheap, and it keeps a
    flood off the database), then the shared ones per page and client and per page."""

    def __init__(self, shared: SharedLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._shared = shared
        self._all = TokenBuckets(1 / IN_ALL.every, burst=IN_ALL.burst, clock=clock)

    async def take(self, page: str, client: str) -> None:
        """Count one attempt, or raise `TooManyRequests` saying when to try again."""
        # Keys are separated by spaces, which page names and addresses never hold (PostgreSQL's
        # text holds no NUL).
        wait = self._all.acquire("")
        if wait <= 0:
            # An address is at most 45 characters (IPv6); anything else is cut to fit the key.
            wait = await self._shared.take(f"client {page} {client[:100]}", PER_CLIENT)
        if wait <= 0:
            wait = await self._shared.take(f"page {page}", PER_PAGE)
        if wait > 0:
            raise TooManyRequests("too many login attempts; try again later", retry_after=wait)
