"""One request with retries and endpoint failover, written once for the sync and async clients.

The logic is a generator that does no I/O (sans-I/O, like h11): it yields a `Call` (send this to
that endpoint) or a `Pause` (sleep this long) and is sent back an `Answer` or a `Failure`. The
sync client drives it with `http.client` and `time.sleep`, the async one with aiohttp and
`asyncio.sleep`, so both retry, back off and fail over the same way, and tests of one hold for
the other.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from stellwerk.client._errors import StellwerkError, Unreachable, error_from_answer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """Send `method path` (the path below the endpoint's base URL) with `body` to `endpoint`."""

    endpoint: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """No answer. `sent`: the request may have reached the server (refused connections and
    failed connects say False). `stale`: a kept-alive connection was found closed before it
    answered, which a server does to idle connections; that is worth one immediate retry
    without holding it against the endpoint."""

    error: BaseException
    sent: bool
    stale: bool = False


Action = Call | Pause
Outcome = Answer | Failure | None
Plan = Generator[Action, Outcome, T]


@dataclass(frozen=True)
class Retries:
    """How hard one request tries. `attempts` counts every try on every endpoint; between tries
    on the same endpoint it waits with exponential backoff and full jitter (a random time up to
    `backoff` doubling to `max_backoff`), never less than the server's `Retry-After`. A
    `Retry-After` above `max_retry_after` is not waited for: the error is raised at once."""

    attempts: int = 6
    backoff: float = 0.1
    max_backoff: float = 5.0
    max_retry_after: float = 30.0

    def delay(self, retry: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**retry))


class Endpoints:
    """The endpoints in the order of preference; the first healthy one gets the requests.

    An endpoint that failed (no answer, or 5xx) is passed over by later requests for `cooldown`
    seconds, then tried again first, so traffic goes back to the preferred endpoint once it is
    up. When all are passed over, the one whose cooldown ends first is tried. Shared by the
    threads of a sync client; a lock keeps the bookkeeping whole."""

    def __init__(
        self,
        urls: Sequence[str],
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one endpoint URL is needed")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must be an http:// or https:// URL")
        self.urls = tuple(url.rstrip("/") for url in urls)
        self.cooldown = cooldown
        self._clock = clock
        self._down_until: dict[str, float] = {}
        self._preferred: str | None = None
        self._lock = threading.Lock()

    def prefer(self, url: str | None) -> None:
        """Try `url` (one of `urls`) first while it is healthy: the active site of a global
        endpoint, as its state names it. None: back to the order given."""
        with self._lock:
            self._preferred = url if url in self.urls else None

    def pick(self, avoid: Collection[str] = ()) -> str:
        """The first healthy endpoint not in `avoid` (the preferred one first); failing that,
        the one (not in `avoid`) whose cooldown ends first. `avoid` must leave at least one."""
        now = self._clock()
        with self._lock:
            left = [url for url in self.urls if url not in avoid]
            if self._preferred in left:
                left.remove(self._preferred)
                left.insert(0, self._preferred)
            for url in left:
                if self._down_until.get(url, 0.0) <= now:
                    return url
            return min(left, key=lambda url: self._down_until[url])

    def failed(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = self._clock() + self.cooldown

    def answered(self, url: str) -> None:
        with self._lock:
            self._down_until.pop(url, None)


def exchange(
    endpoints: Endpoints,
    retries: Retries,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
    *,
    idempotent: bool = True,
) -> Plan[Answer]:
    """The first answer that is neither 5xx nor 429, after retries and failover; raises the last
    error (`Unreachable`, `ServerError`, `TooManyRequests`) when the attempts are used up.

    A request that is not `idempotent` (starting a replay) is not sent again once it may have
    reached the server, except after a 429 or 503, which the server answers before it acts."""
    last: StellwerkError | None = None
    stale_retried = False
    failed_here: set[str] = set()  # each endpoint is tried once before any pause
    retry = 0
    attempt = 0
    while attempt < retries.attempts:
        endpoint = endpoints.pick(avoid=failed_here)
        outcome = yield Call(endpoint, method, path, body, content_type)
        attempt += 1
        pause: float | None = None
        if isinstance(outcome, Failure):
            if outcome.stale and not stale_retried:
                stale_retried = True
                attempt -= 1
                continue
            endpoints.failed(endpoint)
            failed_here.add(endpoint)
            last = Unreachable(f"{endpoint} did not answer: {outcome.error!r}", error="Unreachable")
            last.__cause__ = outcome.error
            if outcome.sent and not idempotent:
                raise last
        elif isinstance(outcome, Answer) and (outcome.status == 429 or outcome.status >= 500):
            last = error_from_answer(outcome.status, outcome.body, outcome.retry_after)
            if outcome.status >= 500:
                endpoints.failed(endpoint)
                failed_here.add(endpoint)
                if not idempotent and outcome.status != 503:
                    raise last
            if outcome.retry_after is not None and outcome.retry_after > retries.max_retry_after:
                raise last
            pause = outcome.retry_after
        elif isinstance(outcome, Answer):
            endpoints.answered(endpoint)
            return outcome
        else:
            raise TypeError(f"a plan was sent {outcome!r}")
        if attempt >= retries.attempts:
            break
        rate_limited = last.status == 429  # the tenant's rate, not the endpoint's health
        if not rate_limited and len(failed_here) < len(endpoints.urls):
            continue  # fail over at once to an endpoint not tried yet
        failed_here.clear()
        yield Pause(max(pause or 0.0, retries.delay(retry)))
        retry += 1
    assert last is not None
    raise last
