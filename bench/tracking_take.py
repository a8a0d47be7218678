"""Benchmark of the Segment reader's hit path alone: the C reader (`_segment_native.scan` and
`take`) reading one `/v1/batch` body of `bench tracking_batch`'s default messages again and
again, every context and id kept (issue 17). No app, no ingest, no HTTP: what the reader costs a
message once a visitor's context is known, which `bench tracking_batch` cannot separate from
the rest.

It prints the thread's CPU microseconds per message. The figure that compares across a loaded
machine is the instruction count: run it under callgrind twice, with `--loops 0` and with
`--loops N`, collecting only inside the C reader, and divide the difference by N x `--batch`:

    valgrind --tool=callgrind --toggle-collect=take --toggle-collect=scan \\
        --callgrind-out-file=cg.0 .venv/bin/stellwerk bench tracking_take --loops 0
    valgrind --tool=callgrind --toggle-collect=take --toggle-collect=scan \\
        --callgrind-out-file=cg.200 .venv/bin/stellwerk bench tracking_take --loops 200

(`callgrind_annotate` of both gives the totals; both runs read the body once before the loop,
so the difference is the loop's hits alone.)

Run: ``stellwerk bench tracking_take [--loops N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from stellwerk.cli import load_file
from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.tracking import Arrival, Binding, segment_reader
from stellwerk.tracking.collector import Events
from stellwerk.tracking.enrich import Enricher
from stellwerk.tracking.refine import Refiner

# `bench tracking_batch`'s messages, its default shape.
_batch = load_file(Path(__file__).resolve().parent / "tracking_batch.py", "stellwerk_bench_batch")
message = _batch.message


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="stellwerk bench tracking_take", description=__doc__)
    parser.add_argument("--loops", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    if segment_reader.native is None:
        print(f"the C reader is not in use: {segment_reader.why_in_python()}")
        return 1
    refiner = Refiner(Enricher(), b"k" * 32)
    binding = Binding(
        tenant=TenantRef(TenantId("t-1"), TenantName("shop")),
        name="shop",
        kind="segment",
        bus="default",
        key_digest="d",
        allowed_origins=frozenset(),
        without_consent="drop",
        full_ip=False,
        pseudonymise=("userId",),
    )
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    content = msgspec.json.encode({"batch": [message(n) for n in range(args.batch)]})
    body = segment_reader.read(content, None)
    assert body is not None
    # The first read works out every context and pseudonym; the loop's reads all hit.
    first = body.messages(refiner, arrival, binding, max_batch=args.batch)
    assert type(first) is Events, "the bench's messages are the common case, taken in C"
    started = time.thread_time()
    for _ in range(args.loops):
        read = segment_reader.read(content, None)
        assert read is not None
        read.messages(refiner, arrival, binding, max_batch=args.batch)
    spent = time.thread_time() - started
    if args.loops:
        per_message = spent / (args.loops * args.batch) * 1e6
        print(
            f"the reader's hit path: {per_message:.2f} us of thread CPU per message "
            f"({args.loops} reads of {args.batch} messages)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
