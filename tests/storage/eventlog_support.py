"""Helpers for the event log tests: a clock the tests move, and events to append."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from stellwerk.events import CloudEvent
from stellwerk.seams import DEFAULT_DEDUP_WINDOW, EventLog, NewEvent
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import EVENTS_FILE

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "nats"]


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
    tenant: str = "acme",
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
            # Housekeeping after every group, so the contract holds with it at its busiest.
            return SqliteEventLog(
                self.data_dir / EVENTS_FILE,
                clock=self.clock,
                dedup_window=dedup_window,
                dedup_sweep_interval=0,
            )
        if self.backend == "nats":
            assert self.nats_url is not None
            digest = hashlib.blake2b(str(self.data_dir).encode(), digest_size=6).hexdigest()
            return JetStreamEventLog(
                self.nats_url, namespace=f"t{digest}", clock=self.clock, dedup_window=dedup_window
            )
        raise AssertionError(f"unknown backend {self.backend}")
