"""Connections at work: the save-time check of a spec, and the authorization it gives requests.

`parse_connection` checks a spec (`stellwerk.rules.connections`) and names the field at fault.
At delivery time `build_auth` turns a spec into a `ConnectionAuth`, which gives the headers (and
query parameters) for a request and learns from a 401.

OAuth tokens are fetched once and shared by every delivery through the connection (one request
in flight at a time, however many deliveries wait), kept until shortly before `expires_in`, and
dropped when the target answers 401 with them, so the next attempt fetches a fresh one.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import aiohttp
import msgspec

from stellwerk.delivery.targets.responses import describe_status, parse_retry_after, read_limited
from stellwerk.delivery.targets.session import SessionPool
from stellwerk.delivery.targets.ssrf import AddressPolicy, find_refusal
from stellwerk.rules import (
    HEADER_NAME_PATTERN,
    OAUTH_OWN_PARAMS,
    QUERY_PARAMETER_PATTERN,
    RESERVED_HEADERS,
    ApiKeyQuerySpec,
    ApiKeySpec,
    BasicAuthSpec,
    ConnectionSpec,
    InvalidConnectionError,
    OAuthClientCredentialsSpec,
    UnsafeTargetError,
)

DEFAULT_TOKEN_LIFETIME_SECONDS: Final = 300.0
MAX_REFRESH_MARGIN_SECONDS: Final = 60.0
TOKEN_TIMEOUT_SECONDS: Final = 5.0

_TOKEN = re.compile(HEADER_NAME_PATTERN)
_PARAMETER = re.compile(QUERY_PARAMETER_PATTERN)
_KIND_NAMES: Final = "'basic', 'api_key', 'api_key_query', 'oauth_client_credentials'"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_AT = re.compile(r"- at `\$\.?([^`]*)`")


def parse_connection(spec: Mapping[str, Any], *, allow_private: bool = False) -> ConnectionSpec:
    """A checked connection spec; `InvalidConnectionError` names the field at fault.

    `allow_private` is the process's `--allow-private-targets`: an OAuth token URL goes through
    the same SSRF guard as target URLs.
    """
    if not isinstance(spec, Mapping):
        raise InvalidConnectionError("connection", "a connection is a JSON object")
    if "type" not in spec:
        raise InvalidConnectionError("type", f"missing; one of {_KIND_NAMES}")
    try:
        parsed: ConnectionSpec = msgspec.convert(dict(spec), type=ConnectionSpec)
    except msgspec.ValidationError as exc:
        raise _field_error(str(exc)) from exc
    _check(parsed, allow_private)
    return parsed


def _field_error(message: str) -> InvalidConnectionError:
    for pattern in (_MISSING, _UNKNOWN):
        found = pattern.search(message)
        if found:
            return InvalidConnectionError(found[1], message)
    found = _AT.search(message)
    if found and found[1] == "type":
        return InvalidConnectionError("type", f"must be one of {_KIND_NAMES}")
    return InvalidConnectionError(found[1] if found else "connection", message.split(" - at")[0])


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidConnectionError(field, "must not be empty")
    if "\r" in value or "\n" in value:
        raise InvalidConnectionError(field, "must not contain line breaks")


def _check(spec: ConnectionSpec, allow_private: bool) -> None:
    if isinstance(spec, BasicAuthSpec):
        _require(spec.username, "username")
        if ":" in spec.username:
            raise InvalidConnectionError("username", "must not contain ':' (RFC 7617)")
        _require(spec.password, "password")
    elif isinstance(spec, ApiKeySpec):
        if not _TOKEN.match(spec.header):
            raise InvalidConnectionError("header", f"{spec.header!r} is not an HTTP header name")
        if spec.header.lower() in RESERVED_HEADERS:
            raise InvalidConnectionError("header", f"{spec.header} is set by Stellwerk itself")
        _require(spec.value, "value")
        if _CONTROL.search(spec.value):
            # A header value cannot carry them (RFC 9110); clients refuse to send it at all.
            raise InvalidConnectionError("value", "must not contain control characters")
    elif isinstance(spec, ApiKeyQuerySpec):
        if not _PARAMETER.match(spec.parameter):
            raise InvalidConnectionError(
                "parameter", "must be 1-128 letters, digits or . _ ~ - (such as api_secret)"
            )
        _require(spec.value, "value")
    else:
        try:
            AddressPolicy(allow_private).check_url(spec.token_url)
        except UnsafeTargetError as exc:
            raise InvalidConnectionError("token_url", exc.reason) from exc
        _require(spec.client_id, "client_id")
        _require(spec.client_secret, "client_secret")
        for name in spec.extra_params:
            if name in OAUTH_OWN_PARAMS:
                raise InvalidConnectionError(f"extra_params.{name}", "is set from its own field")


class AuthError(Exception):
    """No credentials for a request; `retryable` says whether trying later may help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class ConnectionAuth(Protocol):
    """The authorization a target adds to its requests."""

    async def headers(self) -> Mapping[str, str]:
        """Headers for the next request; raises `AuthError` when none can be had."""
        ...

    def query(self) -> Mapping[str, str]:
        """Parameters to add to the query of every request to the target's own origin."""
        ...

    def rejected(self, headers: Mapping[str, str]) -> bool:
        """The target answered 401 to `headers`: True when asking `headers()` again may help."""
        ...

    async def close(self) -> None: ...


class StaticAuth:
    """Basic and API key auth: fixed headers or query parameters, which a 401 will not change."""

    def __init__(self, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> None:
        self._headers = dict(headers)
        self._query = dict(query or {})

    async def headers(self) -> Mapping[str, str]:
        return self._headers

    def query(self) -> Mapping[str, str]:
        return self._query

    def rejected(self, headers: Mapping[str, str]) -> bool:
        return False

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticAuth({sorted(self._headers)}, query={sorted(self._query)})"


class _Token(msgspec.Struct, frozen=True):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a password)
    expires_in: float | None = None


class _CachedToken(msgspec.Struct, frozen=True):
    header: str
    refresh_at: float


class OAuthClientCredentials:
    """Bearer tokens from a client-credentials grant, cached and refreshed.

    `clock` is monotonic seconds (injectable so tests can move time); `wall_clock` is Unix
    seconds, the base of an HTTP-date `Retry-After` from the token endpoint.
    """

    def __init__(
        self,
        spec: OAuthClientCredentialsSpec,
        *,
        session_pool: SessionPool,
        policy: AddressPolicy,
        timeout: float = TOKEN_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._spec = spec
        self._pool = session_pool
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._wall_clock = wall_clock
        self._cached: _CachedToken | None = None
        self._lock = asyncio.Lock()

    async def headers(self) -> Mapping[str, str]:
        cached = self._cached
        if cached is None or self._clock() >= cached.refresh_at:
            async with self._lock:
                # Whoever waited on the lock finds the token the first one fetched.
                cached = self._cached
                if cached is None or self._clock() >= cached.refresh_at:
                    cached = self._cached = await self._fetch()
        return {"Authorization": cached.header}

    def query(self) -> Mapping[str, str]:
        return {}

    def rejected(self, headers: Mapping[str, str]) -> bool:
        cached = self._cached
        if cached is not None and headers.get("Authorization") == cached.header:
            self._cached = None
        return True

    async def close(self) -> None:
        self._cached = None

    async def _fetch(self) -> _CachedToken:
        spec = self._spec
        try:
            url = self._policy.check_url(spec.token_url)
        except UnsafeTargetError as exc:
            raise AuthError(f"token_url: {exc.reason}", retryable=False) from exc
        form = {"grant_type": "client_credentials", **spec.extra_params}
        if spec.scope:
            form["scope"] = spec.scope
        headers = {"Accept": "application/json"}
        if spec.client_auth == "basic":
            headers["Authorization"] = _basic(spec.client_id, spec.client_secret)
        else:
            form["client_id"] = spec.client_id
            form["client_secret"] = spec.client_secret
        started = self._clock()
        session = self._pool.session(self._policy)
        try:
            async with session.post(
                url, data=form, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                body = await read_limited(response)
                status = response.status
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), self._wall_clock()
                )
                description = describe_status(status, response.reason, body)
        except TimeoutError as exc:
            raise AuthError("token endpoint: timed out", retryable=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                raise AuthError(f"token endpoint: {refusal}", retryable=False) from exc
            raise AuthError(f"token endpoint: {exc}", retryable=True) from exc
        if status == 429 or status >= 500:
            raise AuthError(
                f"token endpoint: {description}", retryable=True, retry_after=retry_after
            )
        if status != 200:
            raise AuthError(f"token endpoint: {description}", retryable=False)
        try:
            token = msgspec.json.decode(body, type=_Token, strict=False)
        except msgspec.DecodeError as exc:
            raise AuthError(
                f"token endpoint: unreadable token response: {exc}", retryable=False
            ) from exc
        if token.token_type.lower() != "bearer":
            raise AuthError(
                f"token endpoint: token type {token.token_type!r} is not supported (only Bearer)",
                retryable=False,
            )
        if not token.access_token or _CONTROL.search(token.access_token):
            # Sent on as a header, a line break would let the token endpoint add headers of
            # its own to every delivery (the token itself is never put in a message).
            raise AuthError(
                "token endpoint: the access token is empty or holds characters a header "
                "cannot carry",
                retryable=False,
            )
        lifetime = (
            token.expires_in if token.expires_in is not None else DEFAULT_TOKEN_LIFETIME_SECONDS
        )
        margin = min(MAX_REFRESH_MARGIN_SECONDS, lifetime / 10)
        return _CachedToken(f"Bearer {token.access_token}", started + lifetime - margin)

    def __repr__(self) -> str:
        return (
            f"OAuthClientCredentials({self._spec.token_url!r}, client_id={self._spec.client_id!r})"
        )


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def build_auth(
    spec: ConnectionSpec,
    *,
    session_pool: SessionPool,
    policy: AddressPolicy,
    clock: Callable[[], float] = time.monotonic,
) -> ConnectionAuth:
    """The `ConnectionAuth` for a checked spec, sharing the process's session pool."""
    if isinstance(spec, BasicAuthSpec):
        return StaticAuth({"Authorization": _basic(spec.username, spec.password)})
    if isinstance(spec, ApiKeySpec):
        return StaticAuth({spec.header: spec.value})
    if isinstance(spec, ApiKeyQuerySpec):
        return StaticAuth({}, {spec.parameter: spec.value})
    return OAuthClientCredentials(spec, session_pool=session_pool, policy=policy, clock=clock)
