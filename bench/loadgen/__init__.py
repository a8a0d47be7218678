"""The ingest load generator behind `stellwerk bench ingest`: drives a running server over HTTP.

`run_load(LoadSpec(target=Target(url, key, bus), mode=Mode.BATCH, ...))` sends CloudEvents with
unique ids on keep-alive connections, in a closed loop (as fast as answers come) or an open loop
(`rate`), from one or several processes, and returns a `LoadResult`: every answer counted by
status, transport errors by kind, acknowledged events, and a latency histogram of the 202s.
"""

from loadgen.histogram import LatencyHistogram, nearest_rank
from loadgen.processes import generate, run_load
from loadgen.report import HEADER, problems, render, summary_line
from loadgen.requests import Mode, RequestFactory, Target
from loadgen.result import LoadResult
from loadgen.runner import LoadSpec

__all__ = [
    "HEADER",
    "LatencyHistogram",
    "LoadResult",
    "LoadSpec",
    "Mode",
    "RequestFactory",
    "Target",
    "generate",
    "nearest_rank",
    "problems",
    "render",
    "run_load",
    "summary_line",
]
