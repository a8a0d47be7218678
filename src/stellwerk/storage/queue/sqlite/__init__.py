"""The embedded delivery queue: one SQLite file, one writer thread, leases in memory."""

from stellwerk.storage.queue.sqlite.queue import SqliteDeliveryQueue

__all__ = ["SqliteDeliveryQueue"]
