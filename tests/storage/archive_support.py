"""Helpers for the archive store tests: stores of either backend, events to archive, reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from stellwerk.refs import TenantName
from stellwerk.seams import ArchivedEvent, ArchiveStore, StoredEvent
from stellwerk.storage.archive.jetstream import JetStreamArchiveStore
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.sqlite import PIPELINE_FILE

ACME = TenantName("acme")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "nats"]


@dataclass
class StoreFactory:
    """Makes stores of one backend on the same data: a file, or a server and namespace."""

    backend: str
    directory: Path
    nats_url: str | None = None

    def __call__(self) -> ArchiveStore:
        if self.backend == "nats":
            assert self.nats_url is not None
            return JetStreamArchiveStore(self.nats_url, namespace="test", request_timeout=10.0)
        return SqliteArchiveStore(self.directory / PIPELINE_FILE)


def stored(
    position: int,
    *,
    at: datetime = T0,
    user: str = "u1",
    tenant: TenantName = ACME,
    bus: str = "default",
) -> StoredEvent:
    body = msgspec.json.encode(
        {"id": f"e{position}", "source": "/orders", "type": "order.created", "data": {"user": user}}
    )
    return StoredEvent(
        tenant, bus, position, f"e{position}", "/orders", "order.created", None, at, body
    )


async def read_all(store: ArchiveStore, uid: str, *, page: int = 1000) -> list[ArchivedEvent]:
    """The archive's events of the day around T0, paged by `seq` as a replay reads them."""
    out: list[ArchivedEvent] = []
    after = 0
    while True:
        got = await store.read_window(
            uid, T0 - timedelta(days=1), T0 + timedelta(days=1), after, page
        )
        out.extend(got)
        if len(got) < page:
            return out
        after = got[-1].seq


async def read_all_wide(store: ArchiveStore, uid: str) -> list[ArchivedEvent]:
    return await store.read_window(uid, T0 - timedelta(days=365), T0 + timedelta(days=365))
