"""`Signals` on core NATS: three subjects per namespace, coalesced, without echo.

At most once is enough: every receiver also polls, and a process that was disconnected resyncs
(docs/storage.md, "Signals and leases").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Self

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Change
from stellwerk.storage.jetstream import JetStreamUnavailable, check_namespace, connect

log = structlog.stdlib.get_logger(__name__)

_encode: Final = msgspec.json.Encoder().encode
_decode_pairs: Final = msgspec.json.Decoder(list[tuple[TenantName, str]]).decode
_decode_change: Final = msgspec.json.Decoder(Change).decode


def _ignore(*_args: object) -> None:
    pass


async def _nothing(*_args: object) -> None:
    pass


class NatsSignals:
    """Signals between the processes of one installation, over the NATS server(s) at `url`."""

    def __init__(self, url: str, *, namespace: str = "stellwerk", name: str = "stellwerk") -> None:
        self._servers = [server.strip() for server in url.split(",") if server.strip()]
        prefix = f"{check_namespace(namespace)}.signal"
        self.appended_subject = f"{prefix}.appended"
        self.routed_subject = f"{prefix}.routed"
        self.changed_subject = f"{prefix}.changed"
        self._name = name
        self._nc: Client | None = None
        self._pending: set[tuple[TenantName, str]] = set()
        self._routed = False
        self._flush_scheduled = False
        self._on_appended: Callable[[BusRef], None] = _ignore
        self._on_routed: Callable[[], None] = _ignore
        self._on_changed: Callable[[Change], Awaitable[None]] = _nothing
        self._on_resync: Callable[[], Awaitable[None]] = _nothing
        self._resyncs: set[asyncio.Task[None]] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._lost = False

    async def start(
        self,
        *,
        on_appended: Callable[[BusRef], None],
        on_routed: Callable[[], None],
        on_changed: Callable[[Change], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
    ) -> None:
        self._on_appended = on_appended
        self._on_routed = on_routed
        self._on_changed = on_changed
        self._on_resync = on_resync
        try:
            self._nc = await connect(
                self._servers,
                name=self._name,
                no_echo=True,
                connect_timeout=5,
                disconnected=self._disconnected,
                reconnected=self._reconnected,
            )
        except ConnectionError as exc:
            raise JetStreamUnavailable(str(exc)) from exc
        await self._nc.subscribe(self.appended_subject, cb=self._heard_appended)
        await self._nc.subscribe(self.routed_subject, cb=self._heard_routed)
        await self._nc.subscribe(self.changed_subject, cb=self._heard_changed)
        # Twice: nats-py (2.16) writes a flush's PING to the socket at once, ahead of the SUBs
        # still queued for its flusher task, so the first PONG can come back before the server
        # has the subscriptions, and a change sent meanwhile is not heard here. By the time
        # that PONG is in, the flusher has written the SUBs; the second PING goes after them.
        await self._nc.flush()
        await self._nc.flush()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        for task in self._resyncs:
            task.cancel()
        if nc is not None:
            await nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- sending -------------------------------------------------------------------------------

    def appended(self, bus: BusRef) -> None:
        self._pending.add((bus.tenant, bus.bus))  # as they go on the wire
        self._schedule_flush()

    def routed(self) -> None:
        self._routed = True
        self._schedule_flush()

    async def changed(self, change: Change) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            # The others resync when they (or we) reconnect; nothing better can be done now.
            log.warning("change not signalled: not connected to NATS", kind=change.kind)
            return
        try:
            await nc.publish(self.changed_subject, _encode(change))
            await nc.flush(timeout=2)
        except (NatsError, TimeoutError) as exc:
            log.warning("change not signalled", kind=change.kind, error=repr(exc))

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_pending)

    def _send_pending(self) -> None:
        self._flush_scheduled = False
        pairs, self._pending = self._pending, set()
        routed, self._routed = self._routed, False
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # a hint lost: the receivers' polls find the news
        task = asyncio.create_task(self._send(nc, sorted(pairs), routed), name="signals-send")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, nc: Client, pairs: list[tuple[TenantName, str]], routed: bool) -> None:
        try:
            if pairs:
                await nc.publish(self.appended_subject, _encode(pairs))
            if routed:
                await nc.publish(self.routed_subject, b"")
        except NatsError as exc:
            log.debug("signal not sent", error=repr(exc))

    # -- receiving -----------------------------------------------------------------------------

    async def _heard_appended(self, msg: Msg) -> None:
        try:
            pairs = _decode_pairs(msg.data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed appended signal", subject=msg.subject)
            return
        for tenant, bus in pairs:
            self._on_appended(BusRef(tenant, bus))

    async def _heard_routed(self, _msg: Msg) -> None:
        self._on_routed()

    async def _heard_changed(self, msg: Msg) -> None:
        try:
            change = _decode_change(msg.data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed change signal", subject=msg.subject)
            return
        try:
            await self._on_changed(change)
        except Exception:
            log.exception("applying a change failed; resyncing", kind=change.kind)
            self._resync()

    async def _disconnected(self) -> None:
        if self._nc is not None:
            self._lost = True

    async def _reconnected(self) -> None:
        if self._lost:
            self._lost = False
            self._resync()

    def _resync(self) -> None:
        task = asyncio.create_task(self._call_resync(), name="signals-resync")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _call_resync(self) -> None:
        await self._on_resync()
