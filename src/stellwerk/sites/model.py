"""What the sites API takes and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

MIN_SECRET = 16
MAX_SECRET = 256


class PeerInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/peers/{site}`: where the peer answers and the secret both sites
    share (the same on both sides; never shown again)."""

    url: Annotated[str, msgspec.Meta(max_length=2048)]
    secret: Annotated[str, msgspec.Meta(min_length=MIN_SECRET, max_length=MAX_SECRET)]


class BusReplication(msgspec.Struct):
    """How far the peer has one of the tenant's buses: `replicated` is the last position it
    acknowledged, `end` the bus's newest; `lag_events` counts the events between (at most
    `LAG_COUNT_LIMIT`, `lag_capped` beyond), `lag_seconds` is the age of the oldest of them."""

    bus: str
    replicated: int
    end: int
    lag_events: int
    lag_seconds: float
    lag_capped: bool = False


class Peer(msgspec.Struct):
    """A peer site as this site sees it: `mirrored` buses are replicated up to their end,
    `pending` ones still have events to send. `keys_and_buses` says whether the peer has the
    tenant's keys (digests) and buses as they are now, and when it last took them."""

    site: str
    url: str
    created_at: datetime
    updated_at: datetime
    local_site: str
    mirrored: list[str]
    pending: list[str]
    buses: list[BusReplication]
    keys_and_buses: ControlMirror
    tenant: TenantStanding


class ControlMirror(msgspec.Struct):
    pending: bool
    mirrored_at: datetime | None


class TenantStanding(msgspec.Struct):
    """How the tenant both sites name alike was settled: `pending` (before the first snapshot),
    `joined` (this site's tenant stays), `gave-way` (this site's first tenant gave way to the
    peer's: its keys no longer work here, the peer's do), `conflict` (both hold events of their
    own: nothing is merged; `detail` says so)."""

    state: str
    detail: str | None = None


class PeerList(msgspec.Struct):
    peers: list[Peer]


class Replicated(msgspec.Struct):
    """A peer's answer to a batch of replicated events."""

    stored: int


class ReplicaBatch(msgspec.Struct, forbid_unknown_fields=True):
    """A batch of one bus's events from a peer, as its log stores them."""

    bus: str
    events: list[msgspec.Raw]


Replication = Literal["off", "async", "sync"]
State = Literal["healthy", "failing-over", "failed-over", "failing-back"]


class HealthPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """When the primary counts as sick. Every `window_seconds / evaluations` seconds the
    secondary evaluates the primary's signals over the last `window_seconds`; `evaluations`
    failed evaluations in a row fail the endpoint over. `recovery_seconds` of healthy
    evaluations in a row fail it back."""

    latency_p99_ms: Annotated[float, msgspec.Meta(gt=0, le=600_000)] = 2000.0
    error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    window_seconds: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 5.0
    evaluations: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2
    recovery_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 30.0
    sync_timeout_ms: Annotated[float, msgspec.Meta(gt=0, le=60_000)] = 1000.0


class EndpointInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/endpoints/{name}`."""

    primary: str
    secondary: str
    buses: Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]
    replication: Replication = "async"
    health: HealthPolicy = msgspec.field(default_factory=HealthPolicy)


class Transition(msgspec.Struct):
    at: datetime
    state: State
    active: str
    reason: str


class EndpointLag(msgspec.Struct):
    """How far the other site is behind this one: events and the oldest one's age."""

    events: int
    seconds: float


class Endpoint(msgspec.Struct):
    name: str
    primary: str
    secondary: str
    buses: list[str]
    replication: Replication
    health: HealthPolicy
    state: State
    active: str
    site: str
    lag: EndpointLag
    mirrored: bool
    history: list[Transition]
    created_at: datetime
    updated_at: datetime
    # On the site standing by: per bus, the recorded time (on the active site) before which
    # the active site has made every delivery, as it last told; this site's router waits
    # there, and routes from there once it is active. Empty on the active site.
    delivered_through: dict[str, datetime] = msgspec.field(default_factory=dict)


class EndpointState(msgspec.Struct, forbid_unknown_fields=True):
    """What a site tells its peer of an endpoint's state (signed)."""

    state: State
    active: str
    history: list[Transition]


class Routed(msgspec.Struct, forbid_unknown_fields=True):
    """What the active site of an endpoint tells the other one (signed): per bus, a recorded
    time (microseconds since the epoch, on the active site) before which it has routed every
    event and made every delivery (`Tail.delivered`)."""

    buses: dict[str, int]


class EndpointList(msgspec.Struct):
    endpoints: list[Endpoint]
