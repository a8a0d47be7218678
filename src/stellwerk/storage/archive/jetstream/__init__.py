"""The scale-out archive store on NATS JetStream: copies in a stream, cursors in a table."""

from stellwerk.storage.archive.jetstream.store import JetStreamArchiveStore

__all__ = ["JetStreamArchiveStore"]
