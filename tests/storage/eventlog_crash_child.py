"""Child process of the crash test: append without pause and report every acknowledged event.

Run as `python eventlog_crash_child.py LOG_DIR RUN_ENTRIES EPOCH_ENTRIES INDEX_INTERVAL`. Each
acknowledged (stored) event becomes one line `position id` on stdout, written only after
`append` returned, so every line names an event the log promised to keep. The parent kills this
process with SIGKILL mid-load.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from stellwerk.events import CloudEvent, encode_event
from stellwerk.refs import TenantName
from stellwerk.seams import AppendStatus, NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog

APPENDERS = 8


def _event(event_id: str, bus: str) -> NewEvent:
    body = encode_event(
        CloudEvent(id=event_id, source="/crash", type="crash.test", data={"pad": "x" * 200})
    )
    return NewEvent(TenantName("acme"), bus, event_id, "/crash", "crash.test", None, body)


async def _appender(log: SqliteEventLog, task: int) -> None:
    round_no = 0
    while True:
        size = 1 + (round_no * 7 + task) % 25
        batch = [_event(f"{task}-{round_no}-{i}", f"bus{task % 3}") for i in range(size)]
        results = await log.append(batch)
        lines = [
            f"{result.position} {event.id}\n"
            for event, result in zip(batch, results, strict=True)
            if result.status is AppendStatus.STORED
        ]
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
        round_no += 1


async def main(path: Path, run_entries: int, epoch_entries: int, interval: float) -> None:
    async with SqliteEventLog(
        path,
        dedup_run_entries=run_entries,
        dedup_epoch_entries=epoch_entries,
        index_interval=interval,
    ) as log:
        await asyncio.gather(*(_appender(log, task) for task in range(APPENDERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
