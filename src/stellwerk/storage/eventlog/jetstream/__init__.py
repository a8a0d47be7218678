"""The scale-out event log on NATS JetStream: a stream per tenant, a subject per bus."""

from stellwerk.storage.eventlog.jetstream.log import JetStreamEventLog
from stellwerk.storage.jetstream import Layout

__all__ = ["JetStreamEventLog", "Layout"]
