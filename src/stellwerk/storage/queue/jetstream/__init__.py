"""The scale-out delivery queue on NATS JetStream: lanes in a table, payloads in a stream."""

from stellwerk.storage.queue.jetstream.queue import JetStreamDeliveryQueue

__all__ = ["JetStreamDeliveryQueue"]
