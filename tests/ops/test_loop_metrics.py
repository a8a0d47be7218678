"""Families kept as plain numbers expose exactly what prometheus_client's own would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from stellwerk.ops import LoopCounter, LoopGauge, LoopHistogram
from stellwerk.ops.metrics import HTTP_DURATION_BUCKETS

# Each `_created` series holds the moment its series was made: the two registries differ there.
_CREATED = re.compile(rb"(_created(?:\{[^}]*\})?) \S+")


def exposed(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    return tuple(  # type: ignore[return-value]
        _CREATED.sub(rb"\1 T", render(registry))
        for render in (generate_latest, generate_openmetrics)
    )


def test_counter_histogram_and_gauge_expose_as_prometheus_client_s_own() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counted = Counter("requests_total", "Requests.", ["method", "status"], registry=theirs)
    timed = Histogram(
        "seconds", "Time.", ["method"], buckets=HTTP_DURATION_BUCKETS, registry=theirs
    )
    busy = Gauge("busy", "In flight.", registry=theirs)
    loop_counted = LoopCounter("requests_total", "Requests.", ["method", "status"], ours)
    loop_timed = LoopHistogram("seconds", "Time.", ["method"], ours, buckets=HTTP_DURATION_BUCKETS)
    loop_busy = LoopGauge("busy", "In flight.", ours)

    for method, status, amount in [("GET", "200", 1.0), ("GET", "200", 2.0), ("POST", "202", 1)]:
        counted.labels(method, status).inc(amount)
        loop_counted.labels(method, status).inc(amount)
    # On a bound, between bounds, below the first and past the last.
    for seconds in [0.0003, 0.0005, 0.0007, 0.1, 0.25, 3.0, 11.0, 0.0]:
        timed.labels("GET").observe(seconds)
        loop_timed.labels("GET").observe(seconds)
    timed.labels("HEAD")  # a series made and never observed
    loop_timed.labels("HEAD")
    for gauge in (busy, loop_busy):
        gauge.inc()
        gauge.inc()
        gauge.dec()

    assert exposed(ours) == exposed(theirs)


def test_a_family_refuses_the_wrong_labels_and_a_second_family_of_its_name() -> None:
    registry = CollectorRegistry()
    counted = LoopCounter("requests_total", "Requests.", ["method"], registry)
    with pytest.raises(ValueError, match="takes the labels"):
        counted.labels("GET", "200")
    with pytest.raises(ValueError, match="non-negative"):
        counted.labels("GET").inc(-1)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("requests_total", "Again.", registry=registry)
