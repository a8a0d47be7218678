"""The Metrics object: its own registry, the families it defines and their exposition."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import stellwerk
from stellwerk.ops.metrics import HTTP_DURATION_BUCKETS, Metrics


def parsed(metrics: Metrics) -> dict[str, list[Sample]]:
    body, _ = metrics.render()
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def test_two_instances_in_one_process_do_not_share_series() -> None:
    first, second = Metrics(), Metrics()

    first.http_requests.labels("GET", "/livez", "200").inc()

    assert [s.value for s in parsed(first)["stellwerk_http_requests"]] == [1.0]
    assert parsed(second)["stellwerk_http_requests"] == []


def test_process_cpu_memory_and_build_version_are_exported() -> None:
    families = parsed(Metrics())

    assert families["process_cpu_seconds"][0].value >= 0
    assert families["process_resident_memory_bytes"][0].value > 0
    assert "python_info" in families
    assert families["stellwerk_build_info"][0].labels == {"version": stellwerk.__version__}


def test_process_families_can_be_left_out() -> None:
    families = parsed(Metrics(process=False))

    assert "process_cpu_seconds" not in families
    assert "stellwerk_http_requests_in_flight" in families


def test_duration_buckets_resolve_sub_millisecond_latencies() -> None:
    metrics = Metrics(process=False)
    metrics.http_request_duration.labels("POST", "/v1/buses/{bus}/events").observe(0.0003)

    buckets = {
        s.labels["le"]: s.value
        for s in parsed(metrics)["stellwerk_http_request_duration_seconds"]
        if s.name.endswith("_bucket")
    }
    assert buckets[str(HTTP_DURATION_BUCKETS[0])] == 1
    assert buckets["+Inf"] == 1
    assert len(buckets) == len(HTTP_DURATION_BUCKETS) + 1


def test_families_registered_by_other_parts_are_rendered() -> None:
    metrics = Metrics(process=False)
    attempts = Counter(
        "stellwerk_delivery_attempts_total",
        "Delivery attempts.",
        ["tenant", "outcome"],
        registry=metrics.registry,
    )
    attempts.labels("default", "succeeded").inc(3)

    (sample,) = parsed(metrics)["stellwerk_delivery_attempts"]
    assert sample.labels == {"tenant": "default", "outcome": "succeeded"}
    assert sample.value == 3


def test_render_follows_the_accept_header() -> None:
    metrics = Metrics(process=False)

    text_body, text_type = metrics.render("text/plain")
    om_body, om_type = metrics.render("application/openmetrics-text; version=1.0.0")
    default_body, default_type = metrics.render(None)

    assert text_type.startswith("text/plain")
    assert default_type == text_type
    assert om_type.startswith("application/openmetrics-text")
    assert om_body.endswith(b"# EOF\n")
    assert not text_body.endswith(b"# EOF\n")
    assert b"stellwerk_http_requests_in_flight 0.0" in default_body
