"""The control plane: tenants, API keys, buses, rules, connections, schemas, archives, replays,
erasures and failed events.

One implementation on SQLAlchemy Core serves both databases: SQLite in the data directory by
default, PostgreSQL (asyncpg) for scale-out. Both run the same Alembic migrations.
"""

from stellwerk.storage.control import migrate
from stellwerk.storage.control.archives import ArchiveRecord
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.connections import ConnectionRecord
from stellwerk.storage.control.directory import BusDirectory
from stellwerk.storage.control.erasures import ErasureRecord, ErasureState, ErasureStore
from stellwerk.storage.control.failed import FailedEventFilter, FailedEventRecord, NewFailedEvent
from stellwerk.storage.control.limits import LIMIT_FIELDS, NO_LIMITS, TenantLimits
from stellwerk.storage.control.records import ConflictError, NotFoundError
from stellwerk.storage.control.replays import NewReplay, ReplayRecord, ReplayState
from stellwerk.storage.control.rules import ScheduledRule
from stellwerk.storage.control.schemas import SchemaRecord
from stellwerk.storage.control.store import (
    DEFAULT_TENANT,
    ApiKeyRecord,
    BusRecord,
    ControlPlane,
    TenantRecord,
)

__all__ = [
    "DEFAULT_TENANT",
    "LIMIT_FIELDS",
    "NO_LIMITS",
    "ApiKeyRecord",
    "ArchiveRecord",
    "BusDirectory",
    "BusRecord",
    "ChangeFeed",
    "ConflictError",
    "ConnectionRecord",
    "ControlPlane",
    "ErasureRecord",
    "ErasureState",
    "ErasureStore",
    "FailedEventFilter",
    "FailedEventRecord",
    "NewFailedEvent",
    "NewReplay",
    "NotFoundError",
    "ReplayRecord",
    "ReplayState",
    "ScheduledRule",
    "SchemaRecord",
    "TenantLimits",
    "TenantRecord",
    "migrate",
]
