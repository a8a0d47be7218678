"""The embedded delivery queue: its tables in an engine's file, leases in memory."""

from stellwerk.storage.queue.sqlite.queue import SqliteDeliveryQueue
from stellwerk.storage.queue.sqlite.schema import (
    LEGACY_TABLES,
    give_archived_bytes,
    refer_to_archive,
)
from stellwerk.storage.queue.sqlite.schema import create as create_tables

__all__ = [
    "LEGACY_TABLES",
    "SqliteDeliveryQueue",
    "create_tables",
    "give_archived_bytes",
    "refer_to_archive",
]
