"""Connecting to NATS, at start and after a loss, with backoff and a quiet log.

nats-py retries at a fixed `reconnect_time_wait` and reports every failed attempt; an outage of a
minute would be hundreds of attempts and log lines. Here the wait doubles from 0.25 s to 5 s, and
an outage logs one line when it begins, a reminder at most once a minute, and one when it ends
(docs/scale-out.md, "When NATS is away").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import StaleConnectionError

FIRST_WAIT_SECONDS: Final = 0.25
LONGEST_WAIT_SECONDS: Final = 5.0
REMINDER_SECONDS: Final = 60.0
# How long a client tries at start before the start fails (and is itself retried by the caller).
CONNECT_WITHIN_SECONDS: Final = 30.0
log = structlog.stdlib.get_logger(__name__)

Callback = Callable[[], Awaitable[None]]
# What nats-py reports as a connection breaks, before it calls the disconnected callback.
_BROKEN: Final = (StaleConnectionError, ConnectionResetError, BrokenPipeError)


class Outage:
    """The failed attempts of one client to reach NATS, from the first until one succeeds.

    `failed` counts an attempt and says how long to wait before the next; the log gets a line
    as the outage begins, a reminder every `remind_every` seconds of it (by `clock`), and a
    line as it ends.
    """

    def __init__(
        self,
        servers: list[str],
        *,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        first_wait: float = FIRST_WAIT_SECONDS,
        longest_wait: float = LONGEST_WAIT_SECONDS,
        remind_every: float = REMINDER_SECONDS,
    ) -> None:
        self.servers = servers
        self.name = name
        self._clock = clock
        self._first_wait = first_wait
        self._longest_wait = longest_wait
        self._remind_every = remind_every
        self.attempts = 0
        self.since: float | None = None
        self.last_error: Exception | None = None
        self._reminded = 0.0
        self._wait = first_wait

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def begin(self, reason: str) -> None:
        """The connection is lost (or was never made): one line, unless already said."""
        if self.since is not None:
            return
        self.since = self._reminded = self._clock()
        log.warning(
            "nats_unreachable",
            client=self.name,
            servers=self.servers,
            reason=reason,
            retry=f"every {self._first_wait:g} s, doubling to {self._longest_wait:g} s",
        )

    def failed(self, error: Exception) -> float:
        """Count a failed attempt; the seconds to wait before the next one."""
        self.last_error = error
        self.begin(_describe(error))
        assert self.since is not None
        self.attempts += 1
        now = self._clock()
        if now - self._reminded >= self._remind_every:
            self._reminded = now
            log.warning(
                "nats_still_unreachable",
                client=self.name,
                servers=self.servers,
                attempts=self.attempts,
                seconds=round(now - self.since),
                error=_describe(error),
            )
        wait, self._wait = self._wait, min(self._wait * 2, self._longest_wait)
        return wait

    def ended(self, server: str | None) -> None:
        """Connected again: one line if there was an outage, and the next one starts afresh."""
        if self.since is not None:
            log.info(
                "nats_reachable",
                client=self.name,
                server=server,
                attempts=self.attempts,
                seconds=round(self._clock() - self.since, 1),
            )
        self.since = None
        self.attempts = 0
        self._wait = self._first_wait


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


async def connect(
    servers: list[str],
    *,
    name: str,
    outage: Outage | None = None,
    within: float = CONNECT_WITHIN_SECONDS,
    disconnected: Callback | None = None,
    reconnected: Callback | None = None,
    **options: Any,
) -> Client:
    """A client connected to one of `servers`, which reconnects for as long as it is open.

    At start it tries for `within` seconds and then raises `ConnectionError` naming the
    servers, the attempts and the last error. `options` go to nats-py as they are.
    """
    outage = outage or Outage(servers, name=name)
    nc = Client()

    async def on_error(error: Exception) -> None:
        if not nc.is_connected:
            # An attempt to (re)connect failed: nats-py waits `reconnect_time_wait` before it
            # tries that server again, and reads it anew each time.
            nc.options["reconnect_time_wait"] = outage.failed(error)
        elif isinstance(error, _BROKEN):
            # The connection broke: `on_disconnected` begins the outage, with its one line.
            log.debug("nats_connection_broke", client=name, error=repr(error))
        else:
            log.warning("nats_connection_error", client=name, error=repr(error))

    async def on_disconnected() -> None:
        if not nc.is_closed:
            outage.begin("the connection broke")
        if disconnected is not None:
            await disconnected()

    async def on_reconnected() -> None:
        url = nc.connected_url
        outage.ended(url.netloc if url else None)
        if reconnected is not None:
            await reconnected()

    try:
        async with asyncio.timeout(within):
            await nc.connect(
                servers,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                # Seconds as a float (nats-py's annotation says int; it sleeps any number).
                reconnect_time_wait=FIRST_WAIT_SECONDS,  # type: ignore[arg-type]
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                **options,
            )
    except (TimeoutError, NatsError, OSError) as exc:
        await nc.close()
        cause = outage.last_error or exc
        raise ConnectionError(
            f"cannot reach NATS at {', '.join(servers)} ({outage.attempts} attempts in "
            f"{within:g} s): {_describe(cause)}"
        ) from exc
    url = nc.connected_url
    outage.ended(url.netloc if url else None)
    return nc
