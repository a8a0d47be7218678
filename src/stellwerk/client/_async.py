"""`stellwerk.AsyncClient`: the same methods as `Client`, awaited, over aiohttp.

It runs the same plans as `Client` (see `_exchange`), so batching, retries and failover behave
alike. The aiohttp session is opened on first use, inside the caller's event loop."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from stellwerk.client import _plans as plans
from stellwerk.client._exchange import Answer, Call, Failure, Outcome, Pause, Plan, Retries
from stellwerk.client._models import (
    Archive,
    Bus,
    EndpointState,
    Replay,
    Rule,
    SendResult,
    Target,
)
from stellwerk.client._sync import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAILOVER_COOLDOWN,
    DEFAULT_TIMEOUT,
    USER_AGENT,
)

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio: `async with stellwerk.AsyncClient(endpoint, key) as client:
    await client.send(...)`. One client serves any number of tasks of one event loop."""

    def __init__(
        self,
        endpoint: str | Sequence[str],
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retries: Retries | None = None,
        failover_cooldown: float = DEFAULT_FAILOVER_COOLDOWN,
        global_endpoint: str | None = None,
        max_batch_events: int = plans.MAX_BATCH_EVENTS,
        max_batch_bytes: int = plans.MAX_BATCH_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._session = plans.open_session(
            endpoint,
            retries,
            failover_cooldown,
            max_batch_events,
            max_batch_bytes,
            global_endpoint,
        )
        self._headers = {
            "Authorization": f"Bearer {key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._http: aiohttp.ClientSession | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._session.endpoints.urls

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, call: Call) -> Answer | Failure:
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        headers = {"Content-Type": call.content_type} if call.content_type else None
        # encoded=True: a path segment such as ".." is sent as it is, for the server to judge.
        url = URL(call.endpoint + call.path, encoded=True)
        try:
            async with self._http.request(
                call.method, url, data=call.body, headers=headers, ssl=self._ssl
            ) as response:
                body = await response.read()
                after = plans.retry_after(response.headers.get("Retry-After"))
                return Answer(response.status, body, after)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return Failure(exc, sent=False)
        except aiohttp.ServerDisconnectedError as exc:
            return Failure(exc, sent=True, stale=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Failure(exc, sent=True)

    async def _run(self, plan: Plan[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                action = plan.send(outcome)
                if isinstance(action, Pause):
                    await asyncio.sleep(action.seconds)
                    outcome = None
                else:
                    outcome = await self._call(action)
        except StopIteration as stop:
            result: T = stop.value
            return result

    # Events

    async def send(self, bus: str, events: Iterable[Mapping[str, Any]]) -> SendResult:
        """As `Client.send`."""
        return await self._run(plans.send(self._session, bus, events))

    async def endpoint_state(self, name: str) -> EndpointState:
        """Global endpoint `name` (`GET /v1/endpoints/{name}`), asking each of the client's
        URLs: the secondary site's view when it answers (the site that moves the state), else
        the first answer. From then on requests go to the URL of the site it names active."""
        return await self._run(plans.endpoint_state(self._session, name))

    # Buses

    async def put_bus(
        self, name: str, *, description: str = "", schema_validation: str | None = None
    ) -> Bus:
        return await self._run(plans.put_bus(self._session, name, description, schema_validation))

    async def get_bus(self, name: str) -> Bus:
        return await self._run(plans.get_bus(self._session, name))

    async def list_buses(self) -> list[Bus]:
        return await self._run(plans.list_buses(self._session))

    async def delete_bus(self, name: str) -> None:
        await self._run(plans.delete_bus(self._session, name))

    # Rules

    async def put_rule(
        self,
        bus: str,
        name: str,
        *,
        pattern: Mapping[str, Any],
        targets: Sequence[Target | Mapping[str, Any]] = (),
        state: str = "enabled",
        description: str = "",
        view: str = "cloudevents",
    ) -> Rule:
        return await self._run(
            plans.put_rule(self._session, bus, name, pattern, targets, state, description, view)
        )

    async def get_rule(self, bus: str, name: str) -> Rule:
        return await self._run(plans.get_rule(self._session, bus, name))

    async def list_rules(self, bus: str) -> list[Rule]:
        return await self._run(plans.list_rules(self._session, bus))

    async def delete_rule(self, bus: str, name: str) -> None:
        await self._run(plans.delete_rule(self._session, bus, name))

    # Archives

    async def put_archive(
        self,
        bus: str,
        name: str,
        *,
        pattern: Mapping[str, Any] | None = None,
        retention_days: int = 0,
        description: str = "",
    ) -> Archive:
        return await self._run(
            plans.put_archive(self._session, bus, name, pattern, retention_days, description)
        )

    async def get_archive(self, bus: str, name: str) -> Archive:
        return await self._run(plans.get_archive(self._session, bus, name))

    async def list_archives(self, bus: str) -> list[Archive]:
        return await self._run(plans.list_archives(self._session, bus))

    async def delete_archive(self, bus: str, name: str) -> None:
        await self._run(plans.delete_archive(self._session, bus, name))

    # Replays

    async def start_replay(
        self,
        name: str,
        *,
        archive: str,
        bus: str,
        start: datetime | str,
        end: datetime | str,
        rules: Sequence[str] | None = None,
        description: str = "",
    ) -> Replay:
        return await self._run(
            plans.start_replay(self._session, name, archive, bus, start, end, rules, description)
        )

    async def get_replay(self, name: str) -> Replay:
        return await self._run(plans.get_replay(self._session, name))

    async def list_replays(self, state: str | None = None) -> list[Replay]:
        return await self._run(plans.list_replays(self._session, state))

    async def cancel_replay(self, name: str) -> Replay:
        return await self._run(plans.cancel_replay(self._session, name))

    async def wait_replay(
        self, name: str, *, poll: float = 0.5, within: float | None = None
    ) -> Replay:
        return await self._run(plans.wait_replay(self._session, name, poll, within, time.monotonic))
