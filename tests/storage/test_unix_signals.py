"""Signals between the processes of one data directory, over real Unix datagram sockets."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.storage.test_nats_signals import Ear

from stellwerk.refs import TenantName
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
        a.appended(TenantName("t1"), "default")
    a.appended(TenantName("t2"), "orders")
    await ear_b.until(lambda: len(ear_b.appended) >= 2)
    a.appended(TenantName("t1"), "default")  # a later turn: another datagram, heard after the first
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
    b.appended(TenantName("t1"), "default")
    await ear_a.until(lambda: bool(ear_a.changes and ear_a.appended))
    assert ear_a.changes == [Change("key", "t1", name="k1")]
    assert ear_a.appended == [("t1", "default")]
    assert ear_a.routed == 0
    assert ear_b.resyncs == 0


async def test_many_buses_in_one_turn_are_split_over_datagrams(
    pair: tuple[UnixSignals, Ear, UnixSignals, Ear],
) -> None:
    a, _ear_a, _b, ear_b = pair
    buses = [(TenantName("t1"), f"bus-{i:05d}") for i in range(3000)]
    for tenant, bus in buses:
        a.appended(tenant, bus)
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
    a.appended(TenantName("t1"), "default")
    await a.changed(Change("bus", "t1", bus="default"))
    await ear_b.until(lambda: bool(ear_b.appended and ear_b.changes))
    assert not dead.exists()


async def test_two_data_directories_do_not_hear_each_other(tmp_path: Path) -> None:
    ear_a, ear_b = Ear(), Ear()
    a = await listening(tmp_path / "one", ear_a, "gateway")
    b = await listening(tmp_path / "two", ear_b, "pipeline")
    c = await listening(tmp_path / "two", Ear(), "gateway")
    try:
        a.appended(TenantName("t1"), "default")
        c.appended(TenantName("t1"), "other")
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
