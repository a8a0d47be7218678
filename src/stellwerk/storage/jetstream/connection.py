"""One NATS connection and the three ways it talks to JetStream: API requests, publishes
whose acks come back on our inbox, and Direct Get batches (docs/storage.md).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from stellwerk.seams import EventLogError, LogOverloaded
from stellwerk.storage.jetstream.client import CONNECT_WITHIN_SECONDS, connect

STATUS: Final = "Status"
NO_RESPONDERS: Final = "503"
NOT_FOUND: Final = "404"
END_OF_BATCH: Final = "204"
_decode_json: Final = msgspec.json.Decoder(dict[str, Any]).decode
_encode_json: Final = msgspec.json.Encoder().encode


class JetStreamUnavailable(LogOverloaded):
    """JetStream does not answer now (no connection, no stream leader, a timeout): try later."""


class ConnectionLost(JetStreamUnavailable):
    """The connection broke while a reply was awaited: the request may or may not have landed."""


class JetStreamApiError(EventLogError):
    """JetStream refused a request; `code` is HTTP-like, `err_code` JetStream's own number."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream: {description} (code {code}, error {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class _Batch:
    """The replies to one Direct Get batch request, complete at the end-of-batch marker."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.messages: list[Msg] = []
        self.done: asyncio.Future[list[Msg]] = loop.create_future()

    def add(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is None:
            self.messages.append(msg)
        elif status in (END_OF_BATCH, NOT_FOUND):
            self.done.set_result(self.messages)
        elif status == NO_RESPONDERS:
            self.done.set_exception(JetStreamUnavailable("no JetStream responder for the read"))
        else:
            description = msg.headers.get("Description", "") if msg.headers else ""
            self.done.set_exception(JetStreamApiError(int(status), 0, description))


class Connection:
    """A NATS connection to `url` (several servers comma-separated) with our reply inbox."""

    def __init__(self, url: str, *, request_timeout: float, name: str = "stellwerk") -> None:
        self._servers = [server.strip() for server in url.split(",") if server.strip()]
        self._request_timeout = request_timeout
        self._name = name
        self._nc: Client | None = None
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg] | _Batch] = {}
        self._up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, *, within: float = CONNECT_WITHIN_SECONDS) -> None:
        """Connect, trying for `within` seconds with backoff (`client.connect`); reconnects
        after a loss for as long as the connection is open."""
        try:
            self._nc = await connect(
                self._servers,
                name=self._name,
                within=within,
                connect_timeout=5,
                # Appends are refused while disconnected, so little needs buffering.
                pending_size=8 * 1024 * 1024,
                disconnected=self._disconnected,
                reconnected=self._reconnected,
            )
        except ConnectionError as exc:
            raise JetStreamUnavailable(str(exc)) from exc
        self._up.set()
        self._prefix = self._nc.new_inbox()
        await self._nc.subscribe(
            f"{self._prefix}.*", cb=self._on_reply, pending_msgs_limit=1_000_000
        )

    async def _disconnected(self) -> None:
        """Fail every reply still awaited: on a new connection none of them will come."""
        self._up.clear()
        if self._nc is None:
            return  # we closed it ourselves
        self._fail_waiting(ConnectionLost("the connection to NATS broke"))

    async def _reconnected(self) -> None:
        self._up.set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run `work` in the background for as long as the connection is open (a stream's
        replicas brought back, say); `close` cancels it."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_connected(self, within: float) -> None:
        """Return once connected (at once if so); raise `JetStreamUnavailable` after `within`
        seconds."""
        if self.connected:
            return
        try:
            async with asyncio.timeout(within):
                await self._up.wait()
        except TimeoutError:
            raise JetStreamUnavailable("not connected to NATS (reconnecting)") from None

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for each in waiting.values():
            future = each.done if isinstance(each, _Batch) else each
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_waiting(JetStreamUnavailable("the connection closed"))
        if nc is not None:
            await nc.close()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _client(self) -> Client:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise JetStreamUnavailable("not connected to NATS (reconnecting)")
        return nc

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        waiting = self._waiting.get(token)
        if waiting is None:
            return  # the publisher or reader gave up waiting
        if isinstance(waiting, _Batch):
            waiting.add(msg)
            if waiting.done.done():
                del self._waiting[token]
        elif not waiting.done():
            waiting.set_result(msg)

    # -- the three kinds of request -----------------------------------------------------------

    async def api(self, subject: str, request: object = None) -> dict[str, Any]:
        """A JetStream API call; raise `JetStreamApiError` with the server's reason if refused."""
        nc = self._client()
        payload = b"" if request is None else _encode_json(request)
        try:
            msg = await nc.request(subject, payload, timeout=self._request_timeout)
        except NoRespondersError:
            raise JetStreamUnavailable(f"no JetStream responder for {subject}") from None
        except NatsTimeout:
            raise JetStreamUnavailable(f"JetStream did not answer {subject} in time") from None
        except NatsError as exc:
            raise JetStreamUnavailable(f"{subject}: {exc!r}") from exc
        answer = _decode_json(msg.data)
        error = answer.get("error")
        if error is not None:
            raise JetStreamApiError(
                int(error.get("code", 0)),
                int(error.get("err_code", 0)),
                str(error.get("description", "")),
            )
        return answer

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[Msg]:
        """Send one message; the future resolves with JetStream's reply (ack or error)."""
        nc = self._client()
        token = format(next(self._tokens), "x")
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        # A caller that gives up cancels the future, and its token goes with it.
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        try:
            await nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        except NatsError as exc:
            self._waiting.pop(token, None)
            raise JetStreamUnavailable(f"cannot publish: {exc!r}") from exc
        return future

    async def direct_batch(self, stream: str, request: dict[str, object]) -> list[Msg]:
        """Stored messages from a Direct Get with `batch`; [] if none match."""
        nc = self._client()
        token = format(next(self._tokens), "x")
        batch = _Batch(asyncio.get_running_loop())
        self._waiting[token] = batch
        try:
            await nc.publish(
                f"$JS.API.DIRECT.GET.{stream}",
                _encode_json(request),
                reply=f"{self._prefix}.{token}",
            )
            # `wait`, not `wait_for`: Python 3.11's `wait_for` can swallow a cancellation of
            # ours that meets the answer, and a read in a stopping task must stop.
            done, _ = await asyncio.wait({batch.done}, timeout=self._request_timeout)
            if not done:
                batch.done.cancel()
                raise JetStreamUnavailable("JetStream did not answer a read in time")
            return batch.done.result()
        except NatsError as exc:
            raise JetStreamUnavailable(f"cannot read: {exc!r}") from exc
        finally:
            self._waiting.pop(token, None)
