"""The application layer: one facade per aggregate, between the edges (HTTP, the command line)
and the engine.

A facade owns its use cases: it checks the input, writes the stores and, through the control
plane's after-commit announcements, lets every process take the change in. It knows nothing of
HTTP: it takes a `Principal` and plain values, returns plain values, and refuses with a
`ServiceError` that each edge renders its own way.
"""

# What `Tail` reads, and what `Ingest.beside_append` hooks are given: the facades' callers type
# with them.
from stellwerk.seams import AppendResult, NewEvent, StoredEvent
from stellwerk.service.access import Authenticator, Gate
from stellwerk.service.archives import (
    MAX_ARCHIVES_PER_BUS,
    Archive,
    ArchiveInput,
    Archives,
    ArchiveState,
)
from stellwerk.service.buses import Bus, Buses, BusInput, ValidationMode, checked_name
from stellwerk.service.changes import Caches, CapabilityChanges
from stellwerk.service.connections import Connection, Connections
from stellwerk.service.dead_letters import DeadLetters, DeadLetterView
from stellwerk.service.erasures import Erasure, ErasureInput, ErasureRequest, Erasures
from stellwerk.service.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    RequestRateSpent,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from stellwerk.service.failed_events import (
    FailedEventFilter,
    FailedEvents,
    FailedEventView,
    ResubmitOutcome,
    ResubmitResult,
)
from stellwerk.service.grants import Grants
from stellwerk.service.history import (
    ATTEMPT_OUTCOMES,
    DEFAULT_ATTEMPT_PAGE,
    MAX_ATTEMPT_PAGE,
    AttemptOutcome,
    AttemptView,
    EventHistory,
    History,
    Redelivered,
    RedeliveredTarget,
    TargetHistory,
    TargetState,
)
from stellwerk.service.ingest import (
    AppendCompanion,
    BesideAppend,
    FailedEvent,
    Ingest,
    IngestResult,
    SchemaWarning,
)
from stellwerk.service.keys import CreatedKey, KeyDigest, KeyInfo, KeyInput, Keys
from stellwerk.service.platform import Platform
from stellwerk.service.quotas import Quotas, TenantRate
from stellwerk.service.readiness import Readiness
from stellwerk.service.replays import Replay, ReplayInput, Replays
from stellwerk.service.rules import Rules
from stellwerk.service.schemas import TYPE_RULE, SchemaInput, Schemas, SchemaVersion, checked_type
from stellwerk.service.tail import Tail
from stellwerk.service.tenants import ProvisionedTenant, Tenants, provision_tenant

__all__ = [
    "ATTEMPT_OUTCOMES",
    "DEFAULT_ATTEMPT_PAGE",
    "MAX_ARCHIVES_PER_BUS",
    "MAX_ATTEMPT_PAGE",
    "TYPE_RULE",
    "AppendCompanion",
    "AppendResult",
    "Archive",
    "ArchiveInput",
    "ArchiveState",
    "Archives",
    "AttemptOutcome",
    "AttemptView",
    "Authenticator",
    "BesideAppend",
    "Bus",
    "BusInput",
    "Buses",
    "Caches",
    "CapabilityChanges",
    "Conflict",
    "Connection",
    "Connections",
    "CreatedKey",
    "DeadLetterView",
    "DeadLetters",
    "Erasure",
    "ErasureInput",
    "ErasureRequest",
    "Erasures",
    "EventHistory",
    "FailedEvent",
    "FailedEventFilter",
    "FailedEventView",
    "FailedEvents",
    "Forbidden",
    "Gate",
    "Grants",
    "History",
    "Ingest",
    "IngestResult",
    "InvalidRequest",
    "KeyDigest",
    "KeyInfo",
    "KeyInput",
    "Keys",
    "NewEvent",
    "NotFound",
    "NotSupported",
    "PayloadTooLarge",
    "Platform",
    "ProvisionedTenant",
    "Quotas",
    "Readiness",
    "Redelivered",
    "RedeliveredTarget",
    "Replay",
    "ReplayInput",
    "Replays",
    "RequestRateSpent",
    "ResubmitOutcome",
    "ResubmitResult",
    "Rules",
    "SchemaInput",
    "SchemaVersion",
    "SchemaWarning",
    "Schemas",
    "ServiceError",
    "StoredEvent",
    "Tail",
    "TargetHistory",
    "TargetState",
    "TenantRate",
    "Tenants",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "ValidationMode",
    "checked_name",
    "checked_type",
    "provision_tenant",
]
