"""Scale-out storage on NATS JetStream: the event log (a stream per tenant, a subject per bus)."""

from stellwerk.storage.nats.archives import JetStreamArchiveStore
from stellwerk.storage.nats.eventlog import JetStreamEventLog
from stellwerk.storage.nats.leases import JetStreamLeases
from stellwerk.storage.nats.names import Layout

__all__ = ["JetStreamArchiveStore", "JetStreamEventLog", "JetStreamLeases", "Layout"]
