"""Leases kept where several processes see them: on NATS JetStream (`JetStreamLeases`).

The seam and its one-process form, `LocalLeases`, are in `stellwerk.seams`.
"""

from stellwerk.storage.leases.jetstream import JetStreamLeases

__all__ = ["JetStreamLeases"]
