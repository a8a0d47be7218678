"""What the client sends and gets back, as msgspec structs decoded once from the server's JSON.

Answers ignore fields they do not know, so a newer server does not break an older client. Inputs
that the server fills in with defaults (a target's retry policy, its timeout) default to `None`
here and are left out of the request, so the server's defaults stay the server's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

ReplayState = Literal["queued", "running", "completed", "cancelled", "failed"]
FINISHED_REPLAY_STATES: frozenset[str] = frozenset({"completed", "cancelled", "failed"})


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with an event."""

    error: str
    message: str
    field: str | None = None


class EventFailure(msgspec.Struct, frozen=True):
    """An event the server refused: `index` in the list given to `send`, its `id`, and why."""

    index: int
    error: str
    message: str
    id: str | None = None
    field: str | None = None
    errors: list[Problem] = msgspec.field(default_factory=list)


class SendResult(msgspec.Struct, frozen=True):
    """Every event acknowledged (durable). `ids` in the order the events were given (the ones
    the client made included); `duplicates`: events the server had already stored; `batches`:
    the requests the events went in (not counting retries, nor batches refused as too large)."""

    ids: list[str]
    accepted: int
    duplicates: int
    batches: int


class Bus(msgspec.Struct, frozen=True):
    name: str
    description: str = ""
    schema_validation: str = "off"
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RetryPolicy(msgspec.Struct, frozen=True, omit_defaults=True):
    """EventBridge's: retries after the first attempt (0..185), oldest event age (60..86,400 s)."""

    maximum_retry_attempts: int | None = None
    maximum_event_age_seconds: int | None = None


class InputTransformer(msgspec.Struct, frozen=True, omit_defaults=True):
    """`input_path`, or `input_paths` with an `input_template` (docs/patterns.md)."""

    input_paths: dict[str, str] | None = None
    input_template: str | None = None
    input_path: str | None = None


class Target(msgspec.Struct, frozen=True, omit_defaults=True):
    """One target of a rule (docs/routing.md): `type` is `http`, `bus`, `function`, `log` or a
    capability's; fields left `None` take the server's defaults."""

    id: str
    type: str
    url: str | None = None
    connection: str | None = None
    secret: str | None = None
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    bus: str | None = None
    tenant: str | None = None
    function: str | None = None
    parameters: dict[str, Any] | None = None
    input_transformer: InputTransformer | None = None
    retry_policy: RetryPolicy | None = None
    dead_letter: bool | None = None
    timeout_seconds: float | None = None
    concurrency: int | None = None
    rate_limit: float | None = None
    ordered: bool | None = None
    ordering_key: str | None = None


class Rule(msgspec.Struct, frozen=True):
    name: str
    bus: str
    pattern: dict[str, Any]
    state: str
    targets: list[Target]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    description: str = ""
    view: str = "cloudevents"


class Archive(msgspec.Struct, frozen=True):
    """An archive of a bus's events (all, or those matching `pattern`); `retention_days` 0 is
    forever. `state`: `creating`, `catching_up`, then `enabled`."""

    name: str
    bus: str
    pattern: dict[str, Any] | None = None
    retention_days: int = 0
    description: str = ""
    state: str = "enabled"
    events: int = 0
    size_bytes: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Replay(msgspec.Struct, frozen=True):
    """A replay; `rules` is None for every rule of the bus. `replayed` of `total` so far."""

    name: str
    bus: str
    archive: str
    start: datetime
    end: datetime
    state: str
    replayed: int = 0
    total: int = 0
    rules: list[str] | None = None
    description: str = ""
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_REPLAY_STATES


class BusList(msgspec.Struct, frozen=True):
    buses: list[Bus]


class RuleList(msgspec.Struct, frozen=True):
    rules: list[Rule]


class ArchiveList(msgspec.Struct, frozen=True):
    archives: list[Archive]


class ReplayList(msgspec.Struct, frozen=True):
    replays: list[Replay]


class IngestAnswer(msgspec.Struct, frozen=True):
    """The answer to `POST /v1/buses/{bus}/events` (202), or to a batch of which no event was
    valid (400, with `failed` set)."""

    accepted: int = 0
    failed: list[EventFailure] = msgspec.field(default_factory=list)
    duplicates: int = 0


class EndpointLag(msgspec.Struct, frozen=True):
    events: int
    seconds: float


class EndpointTransition(msgspec.Struct, frozen=True):
    at: datetime
    state: str
    active: str
    reason: str


class EndpointState(msgspec.Struct, frozen=True):
    """A global endpoint as one of its sites sees it (`site`): its `state` (`healthy`,
    `failing-over`, `failed-over`, `failing-back`), the `active` site, how far the other site
    is behind (`lag`) and the transitions so far."""

    name: str
    primary: str
    secondary: str
    state: str
    active: str
    site: str
    lag: EndpointLag
    replication: str = "async"
    history: list[EndpointTransition] = msgspec.field(default_factory=list)
