"""`stellwerk.Client`: the native HTTP API, synchronous, over the standard library's
`http.client` (no dependency beyond msgspec), with kept-alive connections any thread may use."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

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
from stellwerk.version import __version__

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_FAILOVER_COOLDOWN = 30.0
USER_AGENT = f"stellwerk-python/{__version__}"
# A kept-alive connection the server closed meanwhile fails like this before any answer.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _Connections:
    """Idle connections per endpoint. A thread takes one (or opens one), sends, reads the whole
    answer and gives it back, so threads never share a connection mid-request."""

    def __init__(
        self,
        key: str,
        timeout: float,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._headers = {
            "Authorization": f"Bearer {key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _new(self, endpoint: str) -> http.client.HTTPConnection:
        url = urlsplit(endpoint)
        host = url.hostname or ""
        if url.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(
                host, url.port, timeout=self._connect_timeout, context=context
            )
        return http.client.HTTPConnection(host, url.port, timeout=self._connect_timeout)

    def call(self, call: Call) -> Answer | Failure:
        with self._lock:
            idle = self._idle.get(call.endpoint)
            conn = idle.pop() if idle else None
        reused = conn is not None
        if conn is None:
            conn = self._new(call.endpoint)
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                self._forget(call.endpoint)
                return Failure(exc, sent=False)
            assert conn.sock is not None
            conn.sock.settimeout(self._timeout)
        headers = dict(self._headers)
        if call.content_type is not None:
            headers["Content-Type"] = call.content_type
        try:
            conn.request(call.method, urlsplit(call.endpoint).path + call.path, call.body, headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            stale = reused and isinstance(exc, _STALE)
            if not stale:
                self._forget(call.endpoint)  # its other connections are likely dead as well
            return Failure(exc, sent=True, stale=stale)
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.setdefault(call.endpoint, []).append(conn)
        return Answer(response.status, body, plans.retry_after(response.getheader("Retry-After")))

    def _forget(self, endpoint: str) -> None:
        with self._lock:
            idle = self._idle.pop(endpoint, [])
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class Client:
    """Stellwerk's native API: send events, manage buses, rules and replays.

    `endpoint`: a base URL, or several in the order of preference: requests go to the first
    healthy one and fail over to the next on connection errors and 5xx (docs/client.md). `key`:
    an API key (`ingest` to send, `admin` to manage). Use it as a context manager, or call
    `close()`, to close its connections. One client serves any number of threads.
    """

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
        self._connections = _Connections(key, timeout, connect_timeout, ssl_context)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._session.endpoints.urls

    def close(self) -> None:
        self._connections.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, plan: Plan[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                action = plan.send(outcome)
                if isinstance(action, Pause):
                    time.sleep(action.seconds)
                    outcome = None
                else:
                    outcome = self._connections.call(action)
        except StopIteration as stop:
            result: T = stop.value
            return result

    # Events

    def send(self, bus: str, events: Iterable[Mapping[str, Any]]) -> SendResult:
        """Send CloudEvents (dicts) to `bus`; return once every one is acknowledged (durable).

        An event without `id` gets a uuid4 (and `specversion` "1.0"); the events are sent in
        batches within the server's limits, and retried with the same ids, so the server stores
        each once. Raises `SendError` with the events the server refused and their reasons, and
        the ones that could not be sent."""
        return self._run(plans.send(self._session, bus, events))

    def endpoint_state(self, name: str) -> EndpointState:
        """Global endpoint `name` (`GET /v1/endpoints/{name}`), asking each of the client's
        URLs: the secondary site's view when it answers (the site that moves the state), else
        the first answer. From then on requests go to the URL of the site it names active."""
        return self._run(plans.endpoint_state(self._session, name))

    # Buses

    def put_bus(
        self, name: str, *, description: str = "", schema_validation: str | None = None
    ) -> Bus:
        """Create or update a bus (`schema_validation`: `off`, `warn` or `enforce`)."""
        return self._run(plans.put_bus(self._session, name, description, schema_validation))

    def get_bus(self, name: str) -> Bus:
        return self._run(plans.get_bus(self._session, name))

    def list_buses(self) -> list[Bus]:
        return self._run(plans.list_buses(self._session))

    def delete_bus(self, name: str) -> None:
        self._run(plans.delete_bus(self._session, name))

    # Rules

    def put_rule(
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
        """Create or replace a rule: an event pattern and up to 10 targets (docs/routing.md)."""
        return self._run(
            plans.put_rule(self._session, bus, name, pattern, targets, state, description, view)
        )

    def get_rule(self, bus: str, name: str) -> Rule:
        return self._run(plans.get_rule(self._session, bus, name))

    def list_rules(self, bus: str) -> list[Rule]:
        return self._run(plans.list_rules(self._session, bus))

    def delete_rule(self, bus: str, name: str) -> None:
        self._run(plans.delete_rule(self._session, bus, name))

    # Archives

    def put_archive(
        self,
        bus: str,
        name: str,
        *,
        pattern: Mapping[str, Any] | None = None,
        retention_days: int = 0,
        description: str = "",
    ) -> Archive:
        """Create or update an archive of the bus: the events matching `pattern` (all when
        None), kept `retention_days` (0: forever) for replays (docs/archives.md)."""
        return self._run(
            plans.put_archive(self._session, bus, name, pattern, retention_days, description)
        )

    def get_archive(self, bus: str, name: str) -> Archive:
        return self._run(plans.get_archive(self._session, bus, name))

    def list_archives(self, bus: str) -> list[Archive]:
        return self._run(plans.list_archives(self._session, bus))

    def delete_archive(self, bus: str, name: str) -> None:
        self._run(plans.delete_archive(self._session, bus, name))

    # Replays

    def start_replay(
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
        """Replay the archive's events recorded in `[start, end)` to the bus's rules (all, or
        those named); times are timezone-aware datetimes or RFC 3339 strings."""
        return self._run(
            plans.start_replay(self._session, name, archive, bus, start, end, rules, description)
        )

    def get_replay(self, name: str) -> Replay:
        return self._run(plans.get_replay(self._session, name))

    def list_replays(self, state: str | None = None) -> list[Replay]:
        return self._run(plans.list_replays(self._session, state))

    def cancel_replay(self, name: str) -> Replay:
        return self._run(plans.cancel_replay(self._session, name))

    def wait_replay(self, name: str, *, poll: float = 0.5, within: float | None = None) -> Replay:
        """The replay once it has completed, been cancelled or failed (see its `state`)."""
        return self._run(plans.wait_replay(self._session, name, poll, within, time.monotonic))
