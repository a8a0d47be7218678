"""The HTTP client seam of the `http` target: carry one POST to one URL, bring back the answer.

`HttpTarget` decides everything else (redirects, credentials, outcomes). A transport raises
`UnsafeAddressError` when the SSRF guard refused the destination and `TransferError` when no
answer came back (`timed_out` when the request's time ran out: the transport keeps the time
itself, so a delivery sets no timer of its own). `CurlTransport` is the default;
`AiohttpTransport`, the client it replaced, stays as the reference the contract tests and
benchmarks compare it with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import aiohttp
from yarl import URL

from stellwerk.delivery.targets.responses import read_limited
from stellwerk.delivery.targets.ssrf import find_refusal

HttpClient = Literal["curl", "aiohttp"]


class Answer(Protocol):
    """What a receiver said: status, reason phrase, headers, and at most `READ_LIMIT_BYTES`."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    @property
    def reason(self) -> str: ...

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        ...


class TransferError(Exception):
    """No answer came back; `retryable` is False when trying again cannot help (a bad URL),
    `timed_out` True when the request's time ran out."""

    def __init__(self, reason: str, *, retryable: bool = True, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.timed_out = timed_out


class Transport(Protocol):
    """Sends one request; shared by every target of the process with the same address policy."""

    async def post(
        self, url: URL, body: bytes, headers: Mapping[str, str], within: float
    ) -> Answer:
        """POST `body` to `url` with `headers` (redirects are not followed), all of it (name
        lookup, connection, exchange) `within` that many seconds."""
        ...

    async def close(self) -> None: ...


class _AiohttpAnswer:
    __slots__ = ("_response", "body", "status")

    def __init__(self, response: aiohttp.ClientResponse, body: bytes) -> None:
        self._response = response
        self.status = response.status
        self.body = body

    @property
    def reason(self) -> str:
        return self._response.reason or ""

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)


class AiohttpTransport:
    """POSTs through one pooled `aiohttp.ClientSession` (the session pool's for its policy)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(
        self, url: URL, body: bytes, headers: Mapping[str, str], within: float
    ) -> Answer:
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=within),
            ) as response:
                return _AiohttpAnswer(response, await read_limited(response))
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise TransferError(f"timed out after {within:g} s", timed_out=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                raise refusal from exc
            if isinstance(exc, aiohttp.InvalidURL):
                raise TransferError(f"invalid URL {url}: {exc}", retryable=False) from exc
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransferError(reason) from exc

    async def close(self) -> None:
        """The session belongs to the session pool, which closes it."""
