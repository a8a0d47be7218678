"""One exposition for the processes of a data directory: samples labelled by process, each
family described once, and what a scraper makes of it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from stellwerk import __version__
from stellwerk.ops import Metrics, PeerMetrics, merge_expositions

GATEWAY = """# HELP stellwerk_http_requests_total HTTP requests answered.
# TYPE stellwerk_http_requests_total counter
stellwerk_http_requests_total{method="GET",route="/readyz",status="200"} 3.0
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
"""
PIPELINE = """# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 2.25
# HELP stellwerk_invocations_total Deliveries finished.
# TYPE stellwerk_invocations_total counter
stellwerk_invocations_total{tenant="t",bus="default",rule="r",target="hook"} 7.0
# HELP stellwerk_log_append_commit_seconds Time per group commit.
# TYPE stellwerk_log_append_commit_seconds histogram
stellwerk_log_append_commit_seconds_bucket{le="+Inf"} 1.0
stellwerk_log_append_commit_seconds_count 1.0
stellwerk_log_append_commit_seconds_sum 0.5
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_merged_samples_carry_their_process_and_each_family_is_described_once() -> None:
    merged = merge_expositions([("gateway", GATEWAY), ("pipeline", PIPELINE)])
    assert merged.count("# TYPE process_cpu_seconds_total counter") == 1
    found = samples(merged)
    assert found[("process_cpu_seconds_total", frozenset({("process", "gateway")}))] == 1.5
    assert found[("process_cpu_seconds_total", frozenset({("process", "pipeline")}))] == 2.25
    invocations = frozenset(
        {
            ("process", "pipeline"),
            ("tenant", "t"),
            ("bus", "default"),
            ("rule", "r"),
            ("target", "hook"),
        }
    )
    assert found[("stellwerk_invocations_total", invocations)] == 7.0
    bucket = frozenset({("process", "pipeline"), ("le", "+Inf")})
    assert found[("stellwerk_log_append_commit_seconds_bucket", bucket)] == 1.0
    assert len(found) == 7


async def test_a_peer_that_does_not_answer_leaves_its_scrape_gauge_at_0() -> None:
    metrics = Metrics(process=False)
    body, content_type = await PeerMetrics(
        metrics, "gateway", "pipeline", lambda: "\0stellwerk-test/nobody-listens"
    ).render()
    assert content_type.startswith("text/plain")
    found = samples(body.decode())
    assert found[("stellwerk_peer_scrape_ok", frozenset({("process", "pipeline")}))] == 0
    build = frozenset({("process", "gateway"), ("version", __version__)})
    assert found[("stellwerk_build_info", build)] == 1
