"""Rates and charts from a registry's counters: per bus over the last minute, per tenant over
the kept window, with a clock the test moves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from stellwerk.console.charts import HEIGHT, WIDTH, chart
from stellwerk.console.rates import Rates
from stellwerk.ops import merge_expositions


def test_rates_follow_the_counters_between_samples() -> None:
    registry = CollectorRegistry()
    accepted = Counter("stellwerk_ingest_events_accepted", "", ["tenant", "bus"], registry=registry)
    done = Counter(
        "stellwerk_invocations", "", ["tenant", "bus", "rule", "target"], registry=registry
    )
    latency = Histogram(
        "stellwerk_ingestion_to_invocation_seconds",
        "",
        ["tenant", "bus", "rule", "target"],
        registry=registry,
    )
    now = [100.0]
    rates = Rates(registry, clock=lambda: now[0])
    rates.sample()
    assert rates.bus_rate("acme", "orders") is None  # one sample is no rate yet
    accepted.labels("acme", "orders").inc(50)
    accepted.labels("acme", "other").inc(10)
    accepted.labels("rival", "orders").inc(1000)
    done.labels("acme", "orders", "r", "t").inc(20)
    latency.labels("acme", "orders", "r", "t").observe(0.5)
    latency.labels("acme", "orders", "r", "t").observe(1.5)
    now[0] += 5
    rates.sample()
    assert rates.bus_rate("acme", "orders") == 10.0
    assert rates.bus_rate("acme", "none") == 0.0
    now[0] += 5
    rates.sample()  # nothing happened: delivered stays, latency carries over
    series = rates.series("acme")
    assert series.ingest == [12.0, 0.0]
    assert series.delivery == [4.0, 0.0]
    assert series.latency_ms == [1000.0, 1000.0]
    assert rates.bus_rate("acme", "orders") == 5.0  # 50 over the 10 s window


def test_a_chart_scales_its_series_into_the_box() -> None:
    drawn = chart([0.0, 5.0, 10.0], label="Ingest", unit="events/s")
    points = [tuple(map(float, p.split(","))) for p in drawn.points.split()]
    assert [x for x, _ in points] == [0.0, WIDTH / 2, WIDTH]
    assert points[0][1] == HEIGHT - 2  # zero on the floor
    assert points[2][1] == 2.0  # the peak at the top
    assert (drawn.latest, drawn.peak) == (10.0, 10.0)
    assert chart([3.0], label="x", unit="y").points == ""  # one value is no line


async def test_rates_sum_the_processes_of_the_merged_exposition() -> None:
    gateway, pipeline = CollectorRegistry(), CollectorRegistry()
    accepted = Counter("stellwerk_ingest_events_accepted", "", ["tenant", "bus"], registry=gateway)
    done = Counter(
        "stellwerk_invocations", "", ["tenant", "bus", "rule", "target"], registry=pipeline
    )
    now = [0.0]
    rates = Rates(gateway, clock=lambda: now[0])

    async def merged() -> str:
        return merge_expositions(
            [
                ("gateway", generate_latest(gateway).decode()),
                ("pipeline", generate_latest(pipeline).decode()),
            ]
        )

    rates.exposition = merged
    await rates.sample_all()
    accepted.labels("acme", "orders").inc(30)
    done.labels("acme", "orders", "r", "t").inc(15)
    now[0] += 5
    await rates.sample_all()
    series = rates.series("acme")
    assert (series.ingest, series.delivery) == ([6.0], [3.0])  # the pipeline's deliveries too

    async def broken() -> str:
        raise OSError("the pipeline process is restarting")

    rates.exposition = broken
    now[0] += 5
    await rates.sample_all()  # this process's own counters, rather than no sample
    assert rates.series("acme").ingest == [6.0, 0.0]
