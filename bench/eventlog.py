"""Benchmark of the embedded event log: durable events/s, CPU and bytes written per event, beside
the floors of the same work done raw.

Run `stellwerk bench eventlog [--seconds S] [--appenders N] [--event-bytes B] [--dir DIR]`. Each
phase writes a fresh directory:

- `raw file, batch`: one thread writing each batch (the chunk layout's bytes) to a file with one
  `write` and one `fdatasync`: the floor of the log's design, what the disk costs.
- `raw sqlite3, batch`: one thread, a row per event in one WAL transaction per batch with
  `synchronous=FULL` and SQLite's own checkpoints: the floor of a log kept in SQLite (it writes
  each event twice, once in the WAL and once at the checkpoint).
- `log, batch`: N asyncio tasks appending batches through `SqliteEventLog.append` and waiting for
  the acknowledgement. Group commit lets concurrent batches share a commit.
- `raw file, single` and `raw sqlite3, single`: one event per commit: the fsync rate of the disk.
- `log, single`: many tasks appending one event each (as single-event HTTP requests would).
- `log, batch @R/s`: batches started at half the saturated `log, batch` rate, without waiting
  for each other: the acknowledgement latency of a log that keeps up.

Each row prints events/s, latency per `append` (or commit), events per commit, this process's CPU
µs per event (all threads) and bytes written to disk per event (`/proc/self/io` write_bytes, the
index and its checkpoints included), and that as a multiple of the event's stored size (its body
with Stellwerk's extensions). The log's phases close the log before the bytes are read, so its
last index commit and checkpoint count too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from stellwerk.events import CloudEvent, encode_event
from stellwerk.refs import TenantName
from stellwerk.seams import DEFAULT_DEDUP_WINDOW, NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

# What the log adds to each stored body: `,"tenant":"bench","bus":"default","recordedtime":"..."`.
EXTENSIONS_BYTES = len(
    ',"tenant":"bench","bus":"default","recordedtime":"2026-03-01T12:00:00.000000Z"'
)


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    latencies: list[float]
    commits: int = 0
    cpu: float = 0.0  # seconds of this process's CPU (all threads) during the phase
    written: int = 0  # bytes this process wrote to disk during the phase
    stored_size: int = 0  # bytes of one stored event

    def row(self) -> str:
        rate = self.events / self.seconds
        if self.latencies:
            ordered = sorted(self.latencies)
            p50 = statistics.median(ordered) * 1000
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
            latency = f"{p50:8.2f} {p99:8.2f}"
        else:
            latency = f"{'-':>8} {'-':>8}"
        group = f"{self.events / self.commits:9.1f}" if self.commits else f"{'-':>9}"
        cpu = f"{self.cpu * 1e6 / self.events:9.1f}" if self.events else f"{'-':>9}"
        per_event = self.written / self.events if self.events else 0.0
        ratio = per_event / self.stored_size if self.stored_size else 0.0
        written = f"{per_event:9,.0f} {ratio:6.2f}x"
        return f"{self.name:<24} {rate:>12,.0f} {latency} {self.commits:>8} {group} {cpu} {written}"


HEADER = (
    f"{'phase':<24} {'events/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'commits':>8} {'ev/commit':>9}"
    f" {'CPU us/ev':>9} {'B/event':>9} {'x size':>7}"
)


def written_bytes() -> int:
    """Bytes this process has caused to be written to disk (Linux), 0 where unknown."""
    try:
        with open("/proc/self/io") as io:
            for line in io:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed(phase: Callable[[], Result], stored_size: int) -> Result:
    """Run a phase and note its CPU time and bytes written, which neighbours on a shared machine
    do not inflate."""
    os.sync()  # what earlier phases left dirty is not this phase's
    before, written = time.process_time(), written_bytes()
    result = phase()
    os.sync()
    result.cpu = time.process_time() - before
    result.written = written_bytes() - written
    result.stored_size = stored_size
    return result


def make_body(event_id: str, size: int) -> bytes:
    """A CloudEvent of about `size` bytes of JSON."""

    def body(pad: int) -> bytes:
        event = CloudEvent(
            id=event_id,
            source="https://shop.example/orders",
            type="com.example.order.created",
            subject="order/7",
            time="2026-03-01T12:00:00Z",
            datacontenttype="application/json",
            data={"order": event_id, "total": 120.5, "note": "x" * pad},
        )
        return encode_event(event)

    return body(max(0, size - len(body(0))))


RAW_TABLE = """CREATE TABLE raw_events (
    position INTEGER PRIMARY KEY, stream INTEGER NOT NULL, recorded_us INTEGER NOT NULL,
    id TEXT NOT NULL, source TEXT NOT NULL, type TEXT NOT NULL, subject TEXT, body BLOB NOT NULL
)"""
RAW_INSERT = "INSERT INTO raw_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def make_batch(prefix: str, size: int, template: bytes) -> list[NewEvent]:
    # Splicing a fresh id into a template keeps event construction cheap beside the log.
    head, tail = template.split(b"TEMPLATE", 1)
    batch = []
    for i in range(size):
        event_id = f"{prefix}-{i}"
        body = head + event_id.encode() + tail
        batch.append(
            NewEvent(
                TenantName("bench"),
                "default",
                event_id,
                "https://shop.example/orders",
                "t",
                None,
                body,
            )
        )
    return batch


def raw_file(path: Path, batch_size: int, seconds: float, template: bytes) -> Result:
    """Each batch's bodies, framed as the log frames them, with one write and one fdatasync."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    deadline = time.perf_counter() + seconds
    events = commits = 0
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        batch = make_batch(f"f{commits}", batch_size, template)
        t0 = time.perf_counter()
        bodies = [e.body + b" " * EXTENSIONS_BYTES for e in batch]
        frame = struct.pack("<4sIIIqq", b"SWL1", sum(map(len, bodies)), 0, len(bodies), events, 0)
        os.write(fd, frame + b"".join(bodies))
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - t0)
        events += len(batch)
        commits += 1
    elapsed = time.perf_counter() - started
    os.close(fd)
    return Result(f"raw file, {_label(batch_size)}", events, elapsed, latencies, commits)


def raw_sqlite(path: Path, batch_size: int, seconds: float, template: bytes) -> Result:
    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / "raw.db", isolation_level=None)
    # Plain SQLite: a row per event, no index, checkpoints in the committing connection, as
    # SQLite does by default.
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA wal_autocheckpoint = 1000")
    conn.execute(RAW_TABLE)
    deadline = time.perf_counter() + seconds
    position = 0
    commits = 0
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        batch = make_batch(f"r{commits}", batch_size, template)
        t0 = time.perf_counter()
        rows = []
        for event in batch:
            position += 1
            body = event.body + b" " * EXTENSIONS_BYTES
            rows.append((position, 1, 0, event.id, event.source, event.type, None, body))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(RAW_INSERT, rows)
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t0)
        commits += 1
    elapsed = time.perf_counter() - started
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return Result(f"raw sqlite3, {_label(batch_size)}", position, elapsed, latencies, commits)


async def through_log(
    path: Path,
    batch_size: int,
    appenders: int,
    seconds: float,
    template: bytes,
    dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
) -> Result:
    commits = 0

    def on_commit(events: int, commit_seconds: float) -> None:
        nonlocal commits
        commits += 1

    latencies: list[float] = []
    stored = 0
    async with SqliteEventLog(path, on_commit=on_commit, dedup_window=dedup_window) as log:
        deadline = time.perf_counter() + seconds

        async def appender(task: int) -> None:
            nonlocal stored
            round_no = 0
            while time.perf_counter() < deadline:
                batch = make_batch(f"{task}-{round_no}", batch_size, template)
                t0 = time.perf_counter()
                results = await log.append(batch)
                latencies.append(time.perf_counter() - t0)
                stored += len(results)
                round_no += 1

        started = time.perf_counter()
        await asyncio.gather(*(appender(task) for task in range(appenders)))
        elapsed = time.perf_counter() - started
    name = f"log, {_label(batch_size)} x{appenders}"
    if not dedup_window:
        name += " nodedup"
    return Result(name, stored, elapsed, latencies, commits)


async def paced(
    path: Path,
    batch_size: int,
    rate: float,
    seconds: float,
    template: bytes,
    dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
) -> Result:
    """Open-loop load at a fixed rate of events/s: latency when the log is not saturated."""
    latencies: list[float] = []
    stored = 0
    commits = 0
    interval = batch_size / rate

    def on_commit(events: int, commit_seconds: float) -> None:
        nonlocal commits
        commits += 1

    async with SqliteEventLog(path, on_commit=on_commit, dedup_window=dedup_window) as log:

        async def one(number: int) -> None:
            nonlocal stored
            batch = make_batch(f"p{number}", batch_size, template)
            t0 = time.perf_counter()
            results = await log.append(batch)
            latencies.append(time.perf_counter() - t0)
            stored += len(results)

        started = time.perf_counter()
        tasks = []
        number = 0
        while (due := started + number * interval) < started + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(number)))
            number += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    name = f"log, {_label(batch_size)} @{rate:,.0f}/s"
    return Result(name, stored, elapsed, latencies, commits)


def _label(batch_size: int) -> str:
    return "single" if batch_size == 1 else f"batch {batch_size}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase (default 6)")
    parser.add_argument("--batch", type=int, default=100, help="events per batch (default 100)")
    parser.add_argument("--appenders", type=int, default=16, help="concurrent batch appenders")
    parser.add_argument("--singles", type=int, default=256, help="concurrent single appenders")
    parser.add_argument(
        "--dedup-window",
        type=float,
        default=DEFAULT_DEDUP_WINDOW.total_seconds() / 3600,
        help="hours (default 24); 0 turns duplicate detection off",
    )
    parser.add_argument("--event-bytes", type=int, default=330, help="JSON size of an event")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args(argv)

    template = make_body("TEMPLATE", args.event_bytes)
    window = timedelta(hours=args.dedup_window)
    size = len(template)
    stored = size + EXTENSIONS_BYTES
    print(f"event: {size} bytes sent, {stored} stored; {args.seconds:g} s per phase")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        phases: list[Callable[[Path], Result]] = [
            lambda p: raw_file(p, args.batch, args.seconds, template),
            lambda p: raw_sqlite(p, args.batch, args.seconds, template),
            lambda p: asyncio.run(
                through_log(p, args.batch, args.appenders, args.seconds, template, window)
            ),
            lambda p: raw_file(p, 1, args.seconds, template),
            lambda p: raw_sqlite(p, 1, args.seconds, template),
            lambda p: asyncio.run(through_log(p, 1, args.singles, args.seconds, template, window)),
        ]
        print(HEADER)
        results: list[Result] = []
        for number, phase in enumerate(phases):
            path = base / str(number) / LOG_DIR
            results.append(timed(lambda: phase(path), stored))  # noqa: B023 (called at once)
            print(results[-1].row(), flush=True)
        # Latency at half the saturated batch rate, the condition of the p99 target.
        half = results[2].events / results[2].seconds / 2
        path = base / "paced" / LOG_DIR
        paced_result = timed(
            lambda: asyncio.run(paced(path, args.batch, half, args.seconds, template, window)),
            stored,
        )
        print(paced_result.row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
