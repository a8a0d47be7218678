"""Benchmark of the Segment collector: process CPU microseconds per message of `/v1/batch`
beside CloudEvents batch ingest of the same payloads, in the same run (issue 17: the collector
must carry at least 0.8x the events/s of CloudEvents batch ingest).

The whole app runs in this process behind httpx's ASGI transport (the client's cost is in
both sides alike), on a fresh data directory. Each round sends `--requests` requests of
`--batch` messages to each side, alternating which goes first; a round's figure is the
process's CPU time (all threads: the event loop, the log writer, the pipeline) divided by the
messages. CPU time, not wall time, so that a loaded machine changes the figures little; the
rate ratio is the inverse ratio of CPU per message, which holds where the server is CPU-bound.

Messages: a `track` call as a shop's backend relays it: a browser's user agent and address, a
page URL with UTM fields, a referrer, a consent list, and `userId` pseudonymised by the source.
`--shape` says how the contexts recur (`message`). The default, `cycling`, gives every message
an address of 6,400 that come again, so that past the warm-up every context is one the reader
kept: it measures a context's next events, not a new one's. `visitors` is a shop's backend
relaying many visitors (every context new, of agents, pages and referrers seen before: what
`refine_parts` keeps), `browser` a browser's batches (one new visitor per 100 messages).
`--plain` sends CloudEvents only against the collector with consent and enrichment off (a
`refine` keeping messages as they came), to see what they cost. `--general` takes every
message the general way (decoded whole, checked, refined and encoded again) instead of by
`tracking.segment_reader` (only what the collector reads decoded, the rest spliced raw): the
code before issue 17's fourth round, for a before/after in one sitting.

Beside the ratio it prints each thread's CPU per message of both sides (`/proc`: the event
loop's thread, the log's writer and indexer), and the ratio with the log indexer's CPU shared
evenly between the sides: its dedup runs (one per 65,536 events) fall due, in this bench's
order of rounds, while `/v1/batch` runs, though they are for both sides' events alike.

The app is built as `stellwerk serve` builds it, with the objects made at startup frozen out
of the garbage collector's collections (`gc.freeze`); `--no-freeze` leaves them in, as an app
embedded in another process would. The GC's collections of each side are printed.

Run: ``stellwerk bench tracking_batch [--rounds R] [--requests N] [--batch B] [--plain]
[--no-freeze]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec

from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.tracking import CAPABILITY, TrackingOpened

AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


# `--shape visitors`: a shop's backend relaying many visitors' events, each with a context of
# its own (a new address), made of parts that recur: 40 agents, 300 product pages, 4 referrers.
AGENTS = [AGENT.replace("120.0.0.0", f"{version}.0.0.0") for version in range(100, 140)]
REFERRERS = ["https://www.google.com/", "https://www.bing.com/", "https://t.co/x", ""]


def message(n: int, shape: str = "cycling") -> dict[str, Any]:
    """The `n`th message of a shape: `cycling` (the default, the figures' since the fourth
    round: addresses that come again every 6,400 messages, so that after them every context
    is one seen before), `visitors` (every context new, of parts seen before) or `browser`
    (a browser's batches: one visitor, a new one, every 100 messages, its context in all)."""
    made = _message(n)
    if shape == "visitors":
        context = made["context"]
        # A network of its own too (a /24 of 14.6 million), as visitors of a shop mostly are.
        context["ip"] = f"{1 + n % 223}.{n // 223 % 256}.{n // 57_088 % 256}.{1 + n % 254}"
        context["userAgent"] = AGENTS[n % len(AGENTS)]
        context["page"] = {
            "url": f"https://shop.example/p/{n % 300}?utm_source=news&utm_medium=email",
            "referrer": REFERRERS[n % len(REFERRERS)],
        }
    elif shape == "browser":
        visitor = n // 100
        made["context"]["ip"] = f"10.{visitor >> 16 & 255}.{visitor >> 8 & 255}.{visitor & 255}"
    return made


def _message(n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": f"user-{n % 5000}",
        "anonymousId": f"anon-{n % 9000}",
        "event": "Product Viewed",
        "properties": {"product_id": f"p-{n % 300}", "price": 19.99, "currency": "EUR"},
        "context": {
            "ip": f"81.2.{n % 256}.{n % 200 + 1}",
            "userAgent": AGENT,
            "page": {
                "url": "https://shop.example/p/1?utm_source=news&utm_medium=email&utm_campaign=bw",
                "referrer": "https://www.google.com/",
            },
            "consent": {"purposes": ["analytics", "advertising"]},
        },
        "timestamp": "2026-12-04T10:00:00.000Z",
    }


def cloudevent(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": payload["messageId"],
        "source": "/bench",
        "type": "segment.track",
        "subject": payload["userId"],
        "datacontenttype": "application/json",
        "data": payload,
    }


_TICKS = os.sysconf("SC_CLK_TCK")


def thread_seconds() -> dict[str, float]:
    """CPU seconds of each of this process's threads so far, by thread name (`/proc`)."""
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    found: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        name = names.get(tid, f"thread {tid}")
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return found


_INDEXER = "eventlog-indexer"


async def timed(send: Callable[[], Any], requests: int) -> float:
    """Process CPU seconds of `requests` sends."""
    started = time.process_time()
    for _ in range(requests):
        answer = await send()
        assert answer.status_code in (200, 202), answer.text
    return time.process_time() - started


async def run(args: argparse.Namespace) -> float:
    """The median ratio of CloudEvents batch ingest's CPU per event to /v1/batch's."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"data_dir": str(Path(tmp) / "data")})
        # As `stellwerk serve` runs it: the objects made at startup frozen out of the GC's
        # collections (`--no-freeze`: as an app embedded in another process runs).
        app = build_app(settings, freeze_gc=not args.no_freeze)
        async with app.router.lifespan_context(app):
            services = await app.state.lifecycle.wait_started()
            keys = msgspec.json.decode((settings.data_dir / "bootstrap.json").read_bytes())
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                admin = {"Authorization": f"Bearer {keys['admin_key']}"}
                made = await client.put(
                    "/v1/sources/shop",
                    headers=admin,
                    json={"kind": "segment", "pseudonymise": ["userId"]},
                )
                assert made.status_code == 201, made.text
                write_key = made.json()["write_key"]
                opened = services.capabilities[CAPABILITY.name]
                assert isinstance(opened, TrackingOpened)
                if args.plain:
                    opened.collector.refine = lambda m, _a, _b: m
                elif args.general:
                    # The same refinement through another callable: the collector then takes
                    # every message the general way (decoded whole, `segment_reader` unused).
                    refine = opened.collector.refine
                    opened.collector.refine = lambda m, a, b: refine(m, a, b)
                basic = base64.b64encode(f"{write_key}:".encode()).decode()
                segment_headers = {"Authorization": f"Basic {basic}"}
                ingest_headers = {
                    "Authorization": f"Bearer {keys['ingest_key']}",
                    "Content-Type": "application/cloudevents-batch+json",
                }
                counter = iter(range(10**9))

                def segment_body() -> bytes:
                    batch = [message(next(counter), args.shape) for _ in range(args.batch)]
                    return msgspec.json.encode({"batch": batch})

                def ingest_body() -> bytes:
                    batch = [
                        cloudevent(message(next(counter), args.shape)) for _ in range(args.batch)
                    ]
                    return msgspec.json.encode(batch)

                # Bodies made before the clock starts: their making is not the server's cost.
                def prepared(make: Callable[[], bytes]) -> list[bytes]:
                    return [make() for _ in range(args.requests)]

                collections: dict[str, list[int]] = {}
                # CPU seconds by thread name, and messages, of each side's timed rounds.
                by_thread: dict[str, dict[str, float]] = {}
                timed_messages: dict[str, int] = {}
                # The indexer thread's CPU seconds of each side's last call.
                indexer: dict[str, float] = {}

                async def side(path: str, headers: dict[str, str], bodies: list[bytes]) -> float:
                    it = iter(bodies)
                    before = [g["collections"] for g in gc.get_stats()]
                    threads_before = thread_seconds()
                    seconds = await timed(
                        lambda: client.post(path, headers=headers, content=next(it)),
                        args.requests,
                    )
                    threads_after = thread_seconds()
                    after = [g["collections"] for g in gc.get_stats()]
                    indexer[path] = threads_after.get(_INDEXER, 0.0) - threads_before.get(
                        _INDEXER, 0.0
                    )
                    if timing:
                        spent = by_thread.setdefault(path, {})
                        for name, cpu in threads_after.items():
                            used = cpu - threads_before.get(name, 0.0)
                            spent[name] = spent.get(name, 0.0) + used
                        sent = args.requests * args.batch
                        timed_messages[path] = timed_messages.get(path, 0) + sent
                    counted = collections.setdefault(path, [0, 0, 0])
                    for generation in range(3):
                        counted[generation] += after[generation] - before[generation]
                    messages: int = args.requests * args.batch
                    return seconds / messages * 1e6

                # A warm-up round of each (caches, the UA parser, the log's first files).
                timing = False
                await side("/v1/batch", segment_headers, prepared(segment_body))
                await side("/v1/buses/default/events", ingest_headers, prepared(ingest_body))
                timing = True
                segment_us: list[float] = []
                ingest_us: list[float] = []
                shared_ratios: list[float] = []
                for round_ in range(args.rounds):
                    sides = [
                        ("/v1/batch", segment_headers, segment_body, segment_us),
                        ("/v1/buses/default/events", ingest_headers, ingest_body, ingest_us),
                    ]
                    if round_ % 2:
                        sides.reverse()
                    for path, headers, make, into in sides:
                        into.append(await side(path, headers, prepared(make)))
                    # The same round with the log's indexer's CPU shared evenly: it works for
                    # both sides' events alike, but its dedup runs (one per 65,536 events)
                    # land on the side that is running when one is due.
                    per_message = 1e6 / (args.requests * args.batch)
                    both = (indexer["/v1/batch"] + indexer["/v1/buses/default/events"]) / 2
                    segment_shared = segment_us[-1] + (both - indexer["/v1/batch"]) * per_message
                    ingest_shared = (
                        ingest_us[-1] + (both - indexer["/v1/buses/default/events"]) * per_message
                    )
                    shared_ratios.append(ingest_shared / segment_shared)
                    print(
                        f"round {round_ + 1}: /v1/batch {segment_us[-1]:.1f} us/message, "
                        f"CloudEvents batch {ingest_us[-1]:.1f} us/event, "
                        f"ratio {ingest_us[-1] / segment_us[-1]:.2f}x"
                    )
                for path, counted in collections.items():
                    print(f"GC collections by generation (0, 1, 2) on {path}: {counted}")
                # Where the CPU goes: the event loop's thread (MainThread), the log's writer,
                # its indexer (whose periodic runs land on whichever side is running).
                for path, spent in by_thread.items():
                    shown = ", ".join(
                        f"{name} {cpu / timed_messages[path] * 1e6:.1f}"
                        for name, cpu in sorted(spent.items(), key=lambda kv: -kv[1])
                        if cpu > 0
                    )
                    print(f"thread CPU us per message on {path}: {shown}")
    seg, ing = statistics.median(segment_us), statistics.median(ingest_us)
    shared = statistics.median(shared_ratios)
    print(
        f"median ratio of {args.rounds} rounds with the log indexer's CPU shared evenly "
        f"between the sides: {shared:.2f}x"
    )
    print(
        f"median of {args.rounds} rounds ({args.requests} requests of {args.batch} each, "
        f"{'refine off' if args.plain else 'consent and enrichment on'}, {args.shape}"
        f"{', general way' if args.general else ''}): "
        f"/v1/batch {seg:.1f} us/message, CloudEvents batch {ing:.1f} us/event: "
        f"{ing / seg:.2f}x (issue 17: >= 0.8x: {'met' if ing / seg >= 0.8 else 'MISSED'})"
    )
    return ing / seg


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="stellwerk bench tracking_batch", description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--shape",
        choices=["cycling", "visitors", "browser"],
        default="cycling",
        help="the messages' contexts (see `message`)",
    )
    parser.add_argument("--plain", action="store_true", help="refine keeps messages as they came")
    parser.add_argument(
        "--general",
        action="store_true",
        help="messages decoded whole and refined the general way, not by segment_reader",
    )
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave startup's objects to the GC's collections"
    )
    ratio = asyncio.run(run(parser.parse_args(argv)))
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
