"""Signals between the processes of one data directory, over real Unix datagram sockets."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.storage.test_nats_signals import Ear

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Change
from stellwerk.storage.signals import SIGNALS_DIR, UnixSignals, signal_address


async def listening(data_dir: Path, ear: Ear, name: str) -> UnixSignals:
    signals = UnixSignals(data_dir, name=name)
    await signals.start(
        on_appended=ear.on_appended,
        on_routed=ear.on_routed,
        on_changed=ear.on_changed,
        on_resync=ear.on_resync,
    )
    return signals


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[UnixSignals, Ear, UnixSignals, Ear]]:
    ear_a, ear_b = Ear(), Ear()
    a = await listening(tmp_path, ear_a, "gateway")
    b = await listening(tmp_path, ear_b, "pipeline")
    try:
        yield a, ear_a, b, ear_b
    finally:
        await a.close()
        await b.close()


async def test_appends_of_one_loop_turn_go_out_as_one_datagram_and_the_sender_hears_nothing(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear],
) -> None:
    a, ear_a, _b, ear_b = pair
    for _ in range(50):
        a.appended(BusRef(TenantName("t1"), "default"))
    a.appended(BusRef(TenantName("t2"), "orders"))
    await ear_b.until(lambda: len(ear_b.appended) >= 2)
    a.appended(
        BusRef(TenantName("t1"), "default")
    )  # a later turn: another datagram, heard after the first
    await ear_b.until(lambda: len(ear_b.appended) >= 3)
    assert ear_b.appended == [("t1", "default"), ("t2", "orders"), ("t1", "default")]
    assert ear_a.appended == []


async def test_routed_and_changes_arrive_in_order_both_ways(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear],
) -> None:
    a, ear_a, b, ear_b = pair
    a.routed()
    a.routed()
    await ear_b.until(lambda: ear_b.routed >= 1)
    changes = [Change("rules", "t1", bus=f"bus-{i}") for i in range(20)]
    for change in changes:
        await a.changed(change)
    await ear_b.until(lambda: len(ear_b.changes) == len(changes))
    assert ear_b.changes == changes
    assert ear_b.routed == 1  # coalesced
    await b.changed(Change("key", "t1", name="k1"))
    b.appended(BusRef(TenantName("t1"), "default"))
    await ear_a.until(lambda: bool(ear_a.changes and ear_a.appended))
    assert ear_a.changes == [Change("key", "t1", name="k1")]
    assert ear_a.appended == [("t1", "default")]
    assert ear_a.routed == 0
    assert ear_b.resyncs == 0


async def test_a_routed_hint_goes_to_processes_that_deliver_not_to_a_gateway(
    tmp_path: Path,
) -> None:
    # A gateway has no delivery worker: the hint cost it a datagram per routed round.
    ears = {name: Ear() for name in ("gateway", "pipeline", "delivery")}
    signals = {name: await listening(tmp_path, ear, name) for name, ear in ears.items()}
    try:
        signals["pipeline"].routed()
        await ears["delivery"].until(lambda: ears["delivery"].routed == 1)
        # Then an append, in a later flush: datagrams from one sender arrive in order, so a
        # hint sent to the gateway would have come before it.
        signals["pipeline"].appended(BusRef(TenantName("t1"), "default"))
        await ears["gateway"].until(lambda: ears["gateway"].appended == [("t1", "default")])
        assert ears["gateway"].routed == 0
        signals["gateway"].routed()  # a redrive through the API: the pipeline looks now
        await ears["pipeline"].until(lambda: ears["pipeline"].routed == 1)
    finally:
        for each in signals.values():
            await each.close()


async def test_many_buses_in_one_turn_are_split_over_datagrams(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear],
) -> None:
    a, _ear_a, _b, ear_b = pair
    buses = [(TenantName("t1"), f"bus-{i:05d}") for i in range(3000)]
    for tenant, bus in buses:
        a.appended(BusRef(tenant, bus))
    await ear_b.until(lambda: len(ear_b.appended) == len(buses))
    assert sorted(ear_b.appended) == buses


async def test_a_dead_peers_marker_does_not_break_sends_and_is_cleared(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear], tmp_path: Path
) -> None:
    a, _ear_a, _b, ear_b = pair
    # A process killed with SIGKILL leaves its marker behind, naming an address nobody binds.
    dead_name = "pipeline.4194305"  # above pid_max: no process has this pid
    dead = tmp_path / SIGNALS_DIR / dead_name
    dead.write_bytes(signal_address(tmp_path, dead_name))
    a.appended(BusRef(TenantName("t1"), "default"))
    await a.changed(Change("bus", "t1", bus="default"))
    await ear_b.until(lambda: bool(ear_b.appended and ear_b.changes))
    assert not dead.exists()


async def test_two_data_directories_do_not_hear_each_other(tmp_path: Path) -> None:
    ear_a, ear_b = Ear(), Ear()
    a = await listening(tmp_path / "one", ear_a, "gateway")
    b = await listening(tmp_path / "two", ear_b, "pipeline")
    c = await listening(tmp_path / "two", Ear(), "gateway")
    try:
        a.appended(BusRef(TenantName("t1"), "default"))
        c.appended(BusRef(TenantName("t1"), "other"))
        await ear_b.until(lambda: bool(ear_b.appended))
        assert ear_b.appended == [("t1", "other")]
        assert ear_a.appended == []
    finally:
        for signals in (a, b, c):
            await signals.close()


async def test_a_closed_process_removes_its_marker_and_frees_its_address(tmp_path: Path) -> None:
    signals = await listening(tmp_path, Ear(), "gateway")
    marker = tmp_path / SIGNALS_DIR / f"gateway.{os.getpid()}"
    assert marker.read_bytes() == signals.address
    await signals.close()
    assert not marker.exists()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ConnectionRefusedError):
            probe.sendto(b"r", signals.address)
    finally:
        probe.close()


async def test_a_malformed_datagram_is_ignored(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear],
) -> None:
    a, _ear_a, b, ear_b = pair
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for junk in (b"a[not json", b"c{}", b"x", b""):
            probe.sendto(junk, b.address)
    finally:
        probe.close()
    a.routed()
    await ear_b.until(lambda: ear_b.routed == 1)
    await asyncio.sleep(0)
    assert ear_b.appended == []
    assert ear_b.changes == []


class SlowEar(Ear):
    """An ear that takes a change in only when let."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.let = asyncio.Event()

    async def on_changed(self, change: Change) -> None:
        self.entered.set()
        await self.let.wait()
        await super().on_changed(change)


async def test_a_change_is_sent_back_as_taken_once_every_peer_applied_it(tmp_path: Path) -> None:
    ear_a, ear_b = Ear(), SlowEar()
    a = await listening(tmp_path, ear_a, "gateway")
    b = await listening(tmp_path, ear_b, "pipeline")
    try:
        sending = asyncio.create_task(a.changed(Change("rules", "t1", bus="default")))
        await asyncio.wait_for(ear_b.entered.wait(), 10)
        # The peer is applying it: the sender waits on.
        done, _ = await asyncio.wait([sending], timeout=0.05)
        assert not done
        ear_b.let.set()
        await asyncio.wait_for(sending, 10)
        assert ear_b.changes == [Change("rules", "t1", bus="default")]
    finally:
        await a.close()
        await b.close()


async def test_a_peer_that_does_not_answer_holds_a_change_up_only_for_a_while(
    tmp_path: Path,
) -> None:
    ear_b = SlowEar()
    a = UnixSignals(tmp_path, name="gateway", ack_seconds=0.2)
    await a.start(
        on_appended=Ear().on_appended,
        on_routed=Ear().on_routed,
        on_changed=Ear().on_changed,
        on_resync=Ear().on_resync,
    )
    b = await listening(tmp_path, ear_b, "pipeline")
    try:
        await asyncio.wait_for(a.changed(Change("bus", "t1", bus="default")), 10)
        assert ear_b.entered.is_set()
        assert ear_b.changes == []
        ear_b.let.set()  # it catches up later
        await ear_b.until(lambda: len(ear_b.changes) == 1)
    finally:
        await a.close()
        await b.close()


async def test_a_change_whose_sender_names_a_path_is_ignored(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear], tmp_path: Path
) -> None:
    a, _ear_a, b, ear_b = pair
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        change = b'{"kind": "key", "tenant": "t1", "name": "k1"}'
        for sender in (b"../../victim", b"", b"/etc/passwd"):
            probe.sendto(b"c" + (1).to_bytes(8, "big") + sender + b"\n" + change, b.address)
    finally:
        probe.close()
    await a.changed(Change("key", "t1", name="k2"))
    assert [c.name for c in ear_b.changes] == ["k2"]
    assert victim.read_text() == "keep me"
