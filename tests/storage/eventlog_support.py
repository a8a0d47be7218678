"""Helpers for the event log tests: a clock the tests move, and events to append."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from stellwerk.events import CloudEvent
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    DEFAULT_DEDUP_WINDOW,
    Announce,
    AppendResult,
    ErasedEvent,
    EraseHook,
    EraseMatch,
    EventLog,
    NewEvent,
    StoredEvent,
)
from stellwerk.storage.eventlog import CheckedEventLog
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

ACME = TenantName("acme")
ACME_DEFAULT = BusRef(ACME, "default")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# `sqlite`: the index brought up to date after every group, with tiny dedup runs and epochs,
# so the contract holds with housekeeping at its busiest. `sqlite-reader`: appends through one
# log, everything else through a second one that only reads (as the pipeline process of embedded
# mode does), with the index a little behind so that reads come from the files' tail.
BACKENDS = ["sqlite", "sqlite-reader", "nats"]


class MovableClock:
    """Wall time that stands still until a test moves it (the one fake the log tests use)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def new_event(
    event_id: str,
    *,
    tenant: TenantName = ACME,
    bus: str = "default",
    source: str = "/orders",
    event_type: str = "order.created",
    subject: str | None = None,
    data: object = None,
    extensions: dict[str, str | int | bool] | None = None,
) -> NewEvent:
    event = CloudEvent(
        id=event_id,
        source=source,
        type=event_type,
        subject=subject,
        data=data if data is not None else {"n": event_id},
        extensions=extensions or {},
    )
    return NewEvent.of(tenant, bus, event)


def body_of(raw: bytes) -> dict[str, object]:
    decoded = msgspec.json.decode(raw)
    assert isinstance(decoded, dict)
    return decoded


@dataclass
class LogFactory:
    """Makes (unstarted) logs of one backend on the same storage, so a test can reopen it.

    On `nats` the storage is a namespace of the test's server, one per `data_dir`.
    """

    backend: str
    data_dir: Path
    clock: MovableClock
    nats_url: str | None = None

    def __call__(self, *, dedup_window: timedelta = DEFAULT_DEDUP_WINDOW) -> EventLog:
        if self.backend == "sqlite":
            return SqliteEventLog(
                self.data_dir / LOG_DIR,
                clock=self.clock,
                dedup_window=dedup_window,
                index_interval=0,
                dedup_run_entries=4,
                dedup_epoch_entries=8,
            )
        if self.backend == "sqlite-reader":
            return SplitLog(
                SqliteEventLog(
                    self.data_dir / LOG_DIR,
                    clock=self.clock,
                    dedup_window=dedup_window,
                    index_interval=0.2,
                ),
                SqliteEventLog(
                    self.data_dir / LOG_DIR,
                    appends=False,
                    clock=self.clock,
                    dedup_window=dedup_window,
                ),
            )
        if self.backend == "nats":
            assert self.nats_url is not None
            digest = hashlib.blake2b(str(self.data_dir).encode(), digest_size=6).hexdigest()
            return JetStreamEventLog(
                self.nats_url, namespace=f"t{digest}", clock=self.clock, dedup_window=dedup_window
            )
        raise AssertionError(f"unknown backend {self.backend}")


class SplitLog(CheckedEventLog):
    """Two logs on one directory: appends go to the first, everything else to the second."""

    def __init__(self, writer: SqliteEventLog, reader: SqliteEventLog) -> None:
        self.writer = writer
        self.reader = reader

    async def start(self) -> None:
        await self.writer.start()
        await self.reader.start()

    async def close(self) -> None:
        await self.reader.close()
        await self.writer.close()

    async def ping(self) -> None:
        await self.writer.ping()
        await self.reader.ping()

    async def _append(
        self, batch: Sequence[NewEvent], announce: Announce | None
    ) -> list[AppendResult]:
        return await self.writer.append(batch, announce)

    async def _read_after(self, bus: BusRef, after: int, limit: int) -> list[StoredEvent]:
        return await self.reader.read(bus, after, limit)

    async def _read_window(
        self, bus: BusRef, start: datetime, end: datetime, after: int, limit: int
    ) -> list[StoredEvent]:
        return await self.reader.read_window(bus, start, end, after, limit)

    async def last_position(self, bus: BusRef) -> int:
        return await self.reader.last_position(bus)

    async def trim(self, older_than: datetime, keep: Mapping[BusRef, int] | None = None) -> int:
        return await self.reader.trim(older_than, keep)

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None = None,
    ) -> list[ErasedEvent]:
        return await self.reader.erase(tenant, bus, needle, matches, before)
