"""Signals between processes on a real nats-server: what one sends, the others hear, once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from tests.nats_support import NatsServer

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Change
from stellwerk.storage.signals import NatsSignals


@dataclass
class Ear:
    """What one process heard, with a condition to wait on."""

    appended: list[tuple[str, str]] = field(default_factory=list)
    routed: int = 0
    changes: list[Change] = field(default_factory=list)
    resyncs: int = 0
    news: asyncio.Event = field(default_factory=asyncio.Event)

    def on_appended(self, bus: BusRef) -> None:
        self.appended.append((bus.tenant, bus.bus))
        self._tell()

    def on_routed(self) -> None:
        self.routed += 1
        self._tell()

    async def on_changed(self, change: Change) -> None:
        self.changes.append(change)
        self._tell()

    async def on_resync(self) -> None:
        self.resyncs += 1
        self._tell()

    def _tell(self) -> None:
        self.news.set()

    async def until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        # Callbacks run on this loop, so nothing can change between the check and the clear.
        async with asyncio.timeout(within):
            while not condition():
                self.news.clear()
                await self.news.wait()


async def listening(url: str, ear: Ear, namespace: str = "stellwerk") -> NatsSignals:
    signals = NatsSignals(url, namespace=namespace)
    await signals.start(
        on_appended=ear.on_appended,
        on_routed=ear.on_routed,
        on_changed=ear.on_changed,
        on_resync=ear.on_resync,
    )
    return signals


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[tuple[NatsSignals, Ear, NatsSignals, Ear]]:
    ear_a, ear_b = Ear(), Ear()
    a = await listening(nats_server.url, ear_a)
    b = await listening(nats_server.url, ear_b)
    try:
        yield a, ear_a, b, ear_b
    finally:
        await a.close()
        await b.close()


async def test_appends_of_one_loop_turn_go_out_as_one_message_and_the_sender_hears_nothing(
    pair: tuple[NatsSignals, Ear, NatsSignals, Ear],
) -> None:
    a, ear_a, b, ear_b = pair
    for _ in range(50):
        a.appended(BusRef(TenantName("acme"), "orders"))
    a.appended(BusRef(TenantName("acme"), "billing"))
    a.routed()
    await ear_b.until(lambda: ear_b.routed == 1 and len(ear_b.appended) == 2)
    assert sorted(ear_b.appended) == [("acme", "billing"), ("acme", "orders")]
    # A round trip the other way proves a's own messages had time to come back, and did not.
    b.routed()
    await ear_a.until(lambda: ear_a.routed == 1)
    assert ear_a.appended == []
    assert ear_b.routed == 1


async def test_a_change_reaches_every_other_process_with_its_fields(
    nats_server: NatsServer,
) -> None:
    ears = [Ear() for _ in range(3)]
    signals = [await listening(nats_server.url, ear) for ear in ears]
    try:
        change = Change("schema", "t-1", name="order.created")
        await signals[0].changed(change)
        for ear in ears[1:]:
            await ear.until(lambda: ear.changes == [change])  # noqa: B023 (awaited at once)
        assert ears[0].changes == []
    finally:
        for each in signals:
            await each.close()


async def test_namespaces_do_not_hear_each_other(nats_server: NatsServer) -> None:
    ear_blue, ear_green, ear_blue_2 = Ear(), Ear(), Ear()
    blue = await listening(nats_server.url, ear_blue, namespace="blue")
    green = await listening(nats_server.url, ear_green, namespace="green")
    blue_2 = await listening(nats_server.url, ear_blue_2, namespace="blue")
    try:
        await green.changed(Change("rules", "t-1", "orders"))
        await blue.changed(Change("rules", "t-1", "billing"))
        await ear_blue_2.until(lambda: len(ear_blue_2.changes) >= 1)
        # Both were published before blue_2 heard blue's; green's would have arrived first.
        assert [c.bus for c in ear_blue_2.changes] == ["billing"]
        assert ear_blue.changes == []
    finally:
        for each in (blue, green, blue_2):
            await each.close()


async def test_a_process_that_lost_its_connection_resyncs_when_back(
    nats_server: NatsServer,
) -> None:
    ear = Ear()
    signals = await listening(nats_server.url, ear)
    try:
        nats_server.kill()  # what was sent meanwhile is lost to this process
        await nats_server.start_async()
        await ear.until(lambda: ear.resyncs == 1, within=20)
        # And it hears again after the reconnect.
        other_ear = Ear()
        other = await listening(nats_server.url, other_ear)
        try:
            await other.changed(Change("key", "t-1", name="k1"))
            await ear.until(lambda: len(ear.changes) == 1)
        finally:
            await other.close()
    finally:
        await signals.close()


async def test_a_malformed_signal_is_ignored_and_later_ones_still_arrive(
    pair: tuple[NatsSignals, Ear, NatsSignals, Ear],
    nats_server: NatsServer,
) -> None:
    import nats

    a, _, b, ear_b = pair
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish(b.changed_subject, b"{not json")
        await nc.publish(b.appended_subject, b'[["only-one"]]')
        await nc.flush()
    finally:
        await nc.close()
    await a.changed(Change("bus", "t-1", "orders"))
    await ear_b.until(lambda: len(ear_b.changes) == 1)
    assert ear_b.changes == [Change("bus", "t-1", "orders")]
    assert ear_b.appended == []


async def test_a_started_listener_has_its_subscriptions_on_the_server(
    nats_server: NatsServer,
) -> None:
    """`start` returns once the server has answered a PING sent after every SUB, so a change
    published by another process from then on is heard. (nats-py's flush writes its PING ahead
    of SUBs still queued for its flusher: one flush is not enough, and a signals test heard
    nothing in one run of thirty under load.) A relay records what the client writes."""
    written = bytearray()
    relays: list[asyncio.Task[object]] = []

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := await src.read(65536):
                if log:
                    written.extend(chunk)
                dst.write(chunk)
                await dst.drain()
        dst.close()
        with contextlib.suppress(OSError):
            await dst.wait_closed()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        relays.append(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    signals = await listening(f"nats://127.0.0.1:{port}", Ear())
    try:
        sent = bytes(written)
        assert sent.count(b"SUB ") == 3, sent
        assert sent.rindex(b"PING") > sent.rindex(b"SUB "), sent
    finally:
        await signals.close()
        server.close()
        # The client's close ends each relay: EOF one way, then the server's close the other.
        async with asyncio.timeout(10):
            await asyncio.gather(*relays)
            await server.wait_closed()
