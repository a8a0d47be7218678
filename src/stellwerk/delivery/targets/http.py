"""The `http` target: POST each event to a URL, signed, authorized, guarded, within its budget.

What the receiver gets: the payload as the body with the delivery's content type (normally
`application/cloudevents+json`), Standard Webhooks headers (`webhook-id` is the event id, the
receiver's idempotency key), the target's own headers (`http_parameters`) and the connection's
authorization.

How answers map onto outcomes:
- 2xx: `Delivered`.
- 429: `RetryLater(throttled=True)`, 5xx: `RetryLater`, both with the `Retry-After` they sent.
- timeouts, refused or reset connections, DNS failures: `RetryLater`.
- 401 with an OAuth connection: one fresh token and one more try in the same attempt.
- other 4xx, and addresses the SSRF guard refuses: `GiveUp` (the dead-letter queue, redrivable).
- `http_parameters` with JSON-path values (`parameters`): looked up in the payload (the event
  as the rule sees it) at each delivery; a path value the event has not: `GiveUp`.
- redirects: 307 and 308 are followed, at most `MAX_REDIRECTS` hops, each hop checked by the
  guard like the first, never from https down to http; the connection's credentials go only to
  the target's own origin.
  301, 302 and 303 are `GiveUp`: clients turn them into a GET, which would drop the event, and a
  webhook URL that moved is better fixed in the rule than followed forever.

Each target has its own slots (`concurrency`) and optional token bucket (`rate_limit`, in
invocations per second), so a receiver that hangs holds only its own slots. All targets share
the process's `SessionPool`, so its delivery transport and keep-alive connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final
from urllib.parse import quote, quote_plus

import msgspec
from yarl import URL

from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater
from stellwerk.delivery.targets.connections import AuthError, ConnectionAuth
from stellwerk.delivery.targets.responses import (
    answer_excerpt,
    describe_status,
    parse_retry_after,
)
from stellwerk.delivery.targets.session import SessionPool
from stellwerk.delivery.targets.slots import Slots
from stellwerk.delivery.targets.ssrf import AddressPolicy, UnsafeAddressError
from stellwerk.delivery.targets.transport import TransferError, Transport
from stellwerk.delivery.targets.webhooks import RetiringSecret, WebhookSigner, generate_secret
from stellwerk.ratelimit import TokenBuckets
from stellwerk.rules import (
    RESERVED_HEADERS,
    HttpParameters,
    InvalidTargetError,
    UnresolvedParameter,
    UnsafeTargetError,
    http_url,
    resolve_http_parameters,
)
from stellwerk.seams import Delivery

DEFAULT_TIMEOUT_SECONDS: Final = 5.0
MAX_TIMEOUT_SECONDS: Final = 300.0
DEFAULT_CONCURRENCY: Final = 16
MAX_CONCURRENCY: Final = 1024
MAX_REDIRECTS: Final = 3
# Waiting this long for a rate-limit token is cheaper than a round trip through the queue.
MAX_THROTTLE_WAIT_SECONDS: Final = 0.05
_NO_HEADERS: Final[Mapping[str, str]] = {}

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_REDIRECTS",
    "HttpTarget",
    "generate_secret",
]


class HttpTarget:
    """Delivers to one URL. `clock` is monotonic seconds, `wall_clock` Unix seconds (injectable)."""

    def __init__(
        self,
        url: str,
        *,
        session_pool: SessionPool,
        secret: str,
        retiring_secret: RetiringSecret | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_limit: float | None = None,
        auth: ConnectionAuth | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
        parameters: HttpParameters | None = None,
        allow_private: bool = False,
        allowed_networks: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            raise InvalidTargetError(
                "timeout", f"must be above 0 and at most {MAX_TIMEOUT_SECONDS:g} s"
            )
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidTargetError("concurrency", f"must be 1 to {MAX_CONCURRENCY}")
        if rate_limit is not None and not rate_limit > 0:
            raise InvalidTargetError("rate_limit", "must be above 0 invocations per second")
        self._policy = AddressPolicy.build(allow_private, allowed_networks)
        self.url = self._policy.check_url(url)
        self._origin = self.url.origin()
        self._signer = WebhookSigner(secret, retiring_secret)
        self._pool = session_pool
        self.timeout = timeout
        self.concurrency = concurrency
        self._slots = Slots(concurrency)
        self._bucket = TokenBuckets(rate_limit, clock=clock) if rate_limit is not None else None
        self._auth = auth
        # A connection's query key goes on the wire only: `self.url` (shown in reasons, logs
        # and reprs) never holds it, and the secrets are cut out of what a transfer error says.
        query = self._query = auth.query() if auth is not None else {}
        self._sent_url = self.url.update_query(query) if query else self.url
        self._query_secrets = tuple(
            {s for v in query.values() for s in (v, quote(v, safe=""), quote_plus(v))}
        )
        # A target's own (`http_parameters`): never in place of those it sets itself.
        self._headers = _own(headers)
        # `http_parameters` with JSON-path values: `url` is then the URL with its `*` wildcards,
        # filled (and its query extended) per delivery; the host is the same for every event.
        self._parameters = parameters
        self._template = url
        self._wall_clock = wall_clock
        self._transport: Transport | None = None  # the pool's, looked up at the first delivery
        self._timed_out = RetryLater(f"timed out after {timeout:g} s")

    async def deliver(self, delivery: Delivery) -> Outcome:
        if self._bucket is not None:
            throttled = await self._throttle()
            if throttled is not None:
                return throttled
        slots = self._slots
        await slots.take()
        try:
            auth_headers: Mapping[str, str] = _NO_HEADERS
            if self._auth is not None:
                try:
                    auth_headers = await self._auth.headers()
                except AuthError as exc:
                    return _auth_failure(exc)
            try:
                return await self._post(delivery, auth_headers, time.monotonic() + self.timeout)
            except TimeoutError:  # a token renewal or a DNS lookup ran out of the time left
                return self._timed_out
            except AuthError as exc:
                return _auth_failure(exc)
        finally:
            slots.give()

    async def close(self) -> None:
        """Nothing of its own to release: the session pool and connections belong to the process."""

    async def _throttle(self) -> RetryLater | None:
        assert self._bucket is not None
        wait = self._bucket.acquire("")
        if 0 < wait <= MAX_THROTTLE_WAIT_SECONDS:
            await asyncio.sleep(wait)
            wait = self._bucket.acquire("")
        if wait > 0:
            return RetryLater("rate limit of the target reached", retry_after=wait, throttled=True)
        return None

    async def _post(
        self, delivery: Delivery, auth_headers: Mapping[str, str], deadline: float
    ) -> Outcome:
        """Send, follow 307/308, renew a rejected token; each hop gets the time left before
        `deadline` (monotonic), which the transport enforces itself (no timer of ours)."""
        body = delivery.payload
        first, first_sent, own_headers = self.url, self._sent_url, self._headers
        if self._parameters is not None:
            try:
                first, own_headers = self._resolved(self._parameters, body)
            except UnresolvedParameter as exc:
                return GiveUp(f"http_parameters: {exc}")
            first_sent = first.update_query(self._query) if self._query else first
        signed = self._signer.headers(delivery.event_id, int(self._wall_clock()), body)
        if own_headers:
            signed = {**own_headers, **signed}
        signed["Content-Type"] = delivery.content_type
        transport = self._transport
        if transport is None:
            transport = self._transport = self._pool.transport(self._policy)
        url = first
        hops = 0
        renewed = False
        while True:
            if url is not first:
                # The target's own URL passed the same policy when it was built.
                try:
                    self._policy.check_url(url)
                except UnsafeTargetError as exc:
                    return GiveUp(f"refused {url}: {exc.reason}")
            own_origin = url is first or url.origin() == self._origin
            headers = signed
            if own_origin and auth_headers:
                if own_headers:  # the connection's win, whatever the case of their names
                    theirs = {name.lower() for name in auth_headers}
                    signed = {k: v for k, v in signed.items() if k.lower() not in theirs}
                headers = {**signed, **auth_headers}
            left = deadline - time.monotonic()
            if left <= 0:
                return self._timed_out
            sent = url
            if url is first:
                sent = first_sent
            elif own_origin and self._query:
                sent = url.update_query(self._query)
            try:
                answer = await transport.post(sent, body, headers, left)
            except UnsafeAddressError as exc:
                return GiveUp(self._redacted(f"refused {url}: {exc}"))
            except TransferError as exc:
                if exc.timed_out:
                    return self._timed_out
                reason = self._redacted(exc.reason)
                return RetryLater(reason) if exc.retryable else GiveUp(reason)
            status = answer.status
            if 200 <= status < 300:
                # The common case ends here, before any header of the answer is parsed.
                return Delivered(f"HTTP {status}", status, self._excerpt(answer.body))
            location = answer.header("Location")
            retry_after = parse_retry_after(answer.header("Retry-After"), self._wall_clock())
            description = describe_status(status, answer.reason, answer.body)
            if status in (307, 308) and location:
                hops += 1
                if hops > MAX_REDIRECTS:
                    return GiveUp(f"more than {MAX_REDIRECTS} redirects, the last to {location}")
                try:
                    following = url.join(URL(location))
                except ValueError:
                    return GiveUp(f"redirect to an unreadable location {location!r}")
                if url.scheme == "https" and following.scheme == "http":
                    return GiveUp(f"redirect from https to plain http ({following}) refused")
                url = following
                continue
            if 300 <= status < 400:
                return GiveUp(
                    f"{description} (redirects other than 307/308 are not followed, as they "
                    "would turn the POST into a GET; point the target at the final URL)"
                )
            if status == 401 and self._auth is not None and own_origin and not renewed:
                renewed = True
                if self._auth.rejected(auth_headers):
                    async with asyncio.timeout_at(_loop_deadline(deadline)):
                        auth_headers = await self._auth.headers()
                    url = first
                    continue
            answered = self._excerpt(answer.body)
            description = self._redacted(description)
            if status == 429:
                return RetryLater(
                    description, retry_after, throttled=True, status=status, answer=answered
                )
            if status >= 500:
                return RetryLater(description, retry_after, status=status, answer=answered)
            return GiveUp(description, status, answered)

    def _resolved(self, parameters: HttpParameters, payload: bytes) -> tuple[URL, dict[str, str]]:
        """The URL and the own headers of one delivery, JSON-path values looked up in it."""
        try:
            event = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            raise UnresolvedParameter(
                "the payload is not JSON: no value can be looked up"
            ) from None
        resolved = resolve_http_parameters(parameters, event)
        return URL(http_url(self._template, resolved), encoded=True), _own(resolved.headers)

    def _excerpt(self, body: bytes) -> str:
        """What the history keeps of an answer; a secret the receiver echoed is cut out."""
        return self._redacted(answer_excerpt(body)) if body else ""

    def _redacted(self, reason: str) -> str:
        for secret in self._query_secrets:
            reason = reason.replace(secret, "REDACTED")
        return reason

    def __repr__(self) -> str:
        return f"HttpTarget({str(self.url)!r}, concurrency={self.concurrency})"


def _own(headers: Mapping[str, str]) -> dict[str, str]:
    """A target's own headers, less those it sets itself."""
    return {k: v for k, v in headers.items() if k.lower() not in RESERVED_HEADERS}


def _auth_failure(exc: AuthError) -> Outcome:
    if exc.retryable:
        return RetryLater(exc.reason, retry_after=exc.retry_after)
    return GiveUp(exc.reason)


def _loop_deadline(deadline: float) -> float:
    """A `time.monotonic()` deadline on the running loop's clock (they may differ)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
