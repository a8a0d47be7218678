"""The erasure runner on real stores (SQLite files), without the HTTP layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.storage.eventlog_support import new_event

from stellwerk.erasure.criterion import parse
from stellwerk.erasure.runner import ErasureRunner
from stellwerk.erasure.suppression import Suppressions
from stellwerk.ops.metrics import Metrics
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.seams import ArchiveStats
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.control import ControlPlane, ErasureRecord, ErasureState
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE, Engine

ACME_DEFAULT = BusRef(TenantName("acme"), "default")


@dataclass
class Stores:
    control: ControlPlane
    tenant_id: TenantId
    log: SqliteEventLog
    queue: SqliteDeliveryQueue
    archives: SqliteArchiveStore
    suppressions: Suppressions

    def runner(self, queue: SqliteDeliveryQueue | None = None) -> ErasureRunner:
        return ErasureRunner(
            self.control,
            self.log,
            queue or self.queue,
            self.archives,
            suppressions=self.suppressions,
            catch_up_seconds=0.1,  # no router or archiver runs here to catch up
            poll_seconds=0.01,
        )


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    tenant = await control.create_tenant("acme")
    engine = Engine(tmp_path / PIPELINE_FILE)
    async with (
        SqliteEventLog(tmp_path / LOG_DIR) as log,
        # As in `stellwerk serve`: both on one engine (pipeline.db).
        SqliteDeliveryQueue(engine) as queue,
        SqliteArchiveStore(engine) as archives,
    ):
        suppressions = Suppressions(control.erasures, Metrics(), ttl=60)
        yield Stores(control, tenant.id, log, queue, archives, suppressions)
    await control.close()


async def finished(stores: Stores, record: ErasureRecord) -> ErasureRecord:
    async with asyncio.timeout(30):
        while True:
            now = await stores.control.erasures.get(stores.tenant_id, record.id)
            assert now is not None
            if now.state is not ErasureState.RUNNING:
                return now
            await asyncio.sleep(0.01)


async def test_an_archived_copy_of_a_trimmed_event_is_erased_and_suppressed(
    stores: Stores,
) -> None:
    (stored,) = await stores.log.append([new_event("e1", data={"userId": "ann"})])
    archive, _ = await stores.control.archives.put(
        stores.tenant_id, "default", "all", pattern=None, retention_days=0, description="",
        start_position=0, max_archives=10,
    )  # fmt: skip
    (event,) = await stores.log.read(ACME_DEFAULT)
    await stores.archives.archive(ACME_DEFAULT, stored.position, [(archive.uid, event)])
    assert await stores.log.trim(datetime.now(UTC).replace(year=2100)) == 1
    # Ingest asks before the erasure, and caches that the bus has no suppressions.
    _, dropped = await stores.suppressions.drop(
        stores.tenant_id, "acme", "default", [new_event("e1")]
    )
    assert dropped == 0

    runner = stores.runner()
    record = await runner.request(
        stores.tenant_id, TenantName("acme"), bus=None, criterion=parse(None, "data.userId", "ann"),
        suppress=True, requested_by=None,
    )  # fmt: skip
    done = await finished(stores, record)

    assert done.state is ErasureState.COMPLETED
    assert (done.counts["log"], done.counts["archives"]) == (0, 1)
    assert await stores.archives.stats([archive.uid]) == {archive.uid: ArchiveStats(0, 0)}
    # The runner made ingest forget its cached "no suppressions here" for the bus.
    kept, dropped = await stores.suppressions.drop(
        stores.tenant_id, "acme", "default", [new_event("e1"), new_event("e2")]
    )
    assert ([e.id for e in kept], dropped) == (["e2"], 1)


async def test_a_failing_store_leaves_the_entry_failed_with_what_went_before(
    stores: Stores, tmp_path: Path
) -> None:
    await stores.log.append([new_event("e1", data={"userId": "ann"})])
    closed = SqliteDeliveryQueue(tmp_path / "never-started.db")
    record = await stores.runner(closed).request(
        stores.tenant_id, TenantName("acme"), bus=None, criterion=parse(None, "data.userId", "ann"),
        suppress=False, requested_by="k1",
    )  # fmt: skip

    done = await finished(stores, record)

    assert done.state is ErasureState.FAILED
    assert done.error is not None
    assert done.error.startswith("QueueClosed")
    assert done.counts["log"] == 1
    assert done.finished_at is not None
    assert await stores.log.read(ACME_DEFAULT) == []
    # Nothing suppressed without `suppress`.
    assert not await stores.control.erasures.has_suppressions(stores.tenant_id, "default")
