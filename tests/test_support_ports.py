"""The test servers' ports: each xdist worker hands out its own, so no restarted server's clients
can reach another worker's server (tests/nats_support.py, `free_port`)."""

from __future__ import annotations

import pytest
from tests import nats_support


def slice_of(monkeypatch: pytest.MonkeyPatch, worker: str | None, count: int) -> range:
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
    return nats_support._worker_slice(nats_support._ALL_TEST_PORTS)


def test_workers_take_disjoint_slices_of_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = [set(slice_of(monkeypatch, f"gw{i}", 3)) for i in range(3)]
    assert all(len(each) >= 3_000 for each in slices)
    assert sum(len(each) for each in slices) == len(set().union(*slices))  # no port in two
    assert set().union(*slices) <= set(nats_support._ALL_TEST_PORTS)


def test_a_run_without_workers_has_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert slice_of(monkeypatch, None, 1) == nats_support._ALL_TEST_PORTS


def test_ports_handed_out_are_in_this_workers_slice_and_never_twice() -> None:
    ports = [nats_support.free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(port in nats_support._TEST_PORTS for port in ports)
