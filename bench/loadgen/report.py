"""Plain-text reports of load runs: one line of figures per run, then whatever did not get a 202."""

from __future__ import annotations

from loadgen.result import LoadResult

HEADER = (
    f"{'run':<28} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
    f"{'max ms':>8} {'202':>9} {'other':>7}"
)


def _ms(nanoseconds: int) -> str:
    return f"{nanoseconds / 1e6:8.2f}"


def summary_line(name: str, result: LoadResult) -> str:
    latency = result.latency
    return (
        f"{name:<28} {result.requests_per_second:>9,.0f} {result.events_per_second:>10,.0f} "
        f"{_ms(latency.percentile(50))} {_ms(latency.percentile(90))} "
        f"{_ms(latency.percentile(99))} {_ms(latency.maximum)} "
        f"{result.accepted_requests:>9} {result.failed_requests + result.unsent:>7}"
    )


def problems(name: str, result: LoadResult) -> list[str]:
    """One line per kind of request that did not end in a 202, with a sample answer."""
    lines = []
    for status, count in sorted(result.statuses.items()):
        if status != 202:
            sample = result.samples.get(status, "")
            lines.append(f"  {name}: {count} answered {status}: {sample}")
    for kind, count in sorted(result.errors.items()):
        lines.append(f"  {name}: {count} without answer ({kind})")
    if result.unsent:
        lines.append(f"  {name}: {result.unsent} due but not sent (no free connection in time)")
    if result.events_not_accepted:
        lines.append(f"  {name}: {result.events_not_accepted} events in 202 answers not accepted")
    warm_other = sum(c for s, c in result.warmup_statuses.items() if s != 202)
    if warm_other or result.warmup_errors:
        lines.append(
            f"  {name}: during warm-up, {warm_other} answers other than 202 and "
            f"{result.warmup_errors} without answer"
        )
    return lines


def render(name: str, result: LoadResult) -> str:
    return "\n".join([summary_line(name, result), *problems(name, result)])
