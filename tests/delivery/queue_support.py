"""Helpers for the delivery queue and worker tests: a queue per backend, deliveries to route."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.storage.eventlog_support import T0, MovableClock

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import DeliveryQueue, NewDelivery
from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import PIPELINE_FILE

ACME = TenantName("acme")
ACME_DEFAULT = BusRef(ACME, "default")

BACKENDS = ["sqlite", "nats"]


@dataclass
class QueueFactory:
    """Makes (unstarted) queues of one backend on the same storage, so a test can reopen it.

    On `nats` the storage is the test's own `nats-server` (`nats_url`).
    """

    backend: str
    data_dir: Path
    clock: MovableClock
    nats_url: str | None = None

    def __call__(self) -> DeliveryQueue:
        if self.backend == "sqlite":
            return SqliteDeliveryQueue(self.data_dir / PIPELINE_FILE, clock=self.clock)
        if self.backend == "nats":
            assert self.nats_url is not None
            return JetStreamDeliveryQueue(self.nats_url, clock=self.clock)
        raise AssertionError(f"unknown backend {self.backend}")


def new_delivery(
    position: int,
    *,
    tenant: TenantName = ACME,
    bus: str = "default",
    rule: str = "r1",
    target_id: str = "t1",
    ordering_key: str | None = None,
    recorded_time: datetime = T0,
) -> NewDelivery:
    return NewDelivery(
        tenant=tenant,
        bus=bus,
        rule=rule,
        target_id=target_id,
        event_id=f"e{position}",
        event_source="/orders",
        position=position,
        recorded_time=recorded_time,
        payload=f'{{"n":{position}}}'.encode(),
        content_type="application/cloudevents+json",
        ordering_key=ordering_key,
    )
