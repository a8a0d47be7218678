"""Scale-out storage on NATS JetStream: the event log (a stream per tenant, a subject per bus),
the delivery queue, the archive store, leases, and the signals between processes (core NATS)."""

from stellwerk.storage.nats.archives import JetStreamArchiveStore
from stellwerk.storage.nats.deliveries import JetStreamDeliveryQueue
from stellwerk.storage.nats.eventlog import JetStreamEventLog
from stellwerk.storage.nats.leases import JetStreamLeases
from stellwerk.storage.nats.names import Layout
from stellwerk.storage.nats.signals import NatsSignals

__all__ = [
    "JetStreamArchiveStore",
    "JetStreamDeliveryQueue",
    "JetStreamEventLog",
    "JetStreamLeases",
    "Layout",
    "NatsSignals",
]
