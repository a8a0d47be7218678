"""NATS JetStream plumbing the scale-out stores share: the connection, stream configs, KV-shaped
tables with compare-and-set, subject and stream names, and event records with their queries."""

from stellwerk.storage.jetstream import records
from stellwerk.storage.jetstream.client import Outage, connect
from stellwerk.storage.jetstream.connection import (
    NO_RESPONDERS,
    STATUS,
    Connection,
    ConnectionLost,
    JetStreamApiError,
    JetStreamUnavailable,
)
from stellwerk.storage.jetstream.names import Layout, bus_of, check_namespace, message_id, token
from stellwerk.storage.jetstream.queries import StreamQueries, nothing_left
from stellwerk.storage.jetstream.streams import (
    WRONG_LAST_SEQUENCE,
    ensure_stream,
    failures_as,
    log_config,
    table_config,
)
from stellwerk.storage.jetstream.table import (
    SCAN_BATCH,
    Put,
    Stored,
    TableIO,
    TableLayout,
    decode_ack,
    publish_all,
    scan,
    stored,
)

__all__ = [
    "NO_RESPONDERS",
    "SCAN_BATCH",
    "STATUS",
    "WRONG_LAST_SEQUENCE",
    "Connection",
    "ConnectionLost",
    "JetStreamApiError",
    "JetStreamUnavailable",
    "Layout",
    "Outage",
    "Put",
    "Stored",
    "StreamQueries",
    "TableIO",
    "TableLayout",
    "bus_of",
    "check_namespace",
    "connect",
    "decode_ack",
    "ensure_stream",
    "failures_as",
    "log_config",
    "message_id",
    "nothing_left",
    "publish_all",
    "records",
    "scan",
    "stored",
    "table_config",
    "token",
]
