"""What the JetStream delivery queue stores: a members stream and a KV-shaped table.

Each unfinished delivery is an immutable member message on its lane's subject; the table holds
lanes, dead letters and cursors (docs/scale-out.md, "Layout: lanes"). A finished unordered
lane's subject is rolled up by a `Stellwerk-Finished` marker that then expires. Durable-format
rule: new fields get defaults, no field changes its type.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import ClassVar, Final

import msgspec

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import NewDelivery
from stellwerk.storage.jetstream import TableLayout, token

DELIVERY_HEADER: Final = "Stellwerk-Delivery"
FINISHED_HEADER: Final = "Stellwerk-Finished"
ROLLUP: Final = "Nats-Rollup"


def digest(*parts: str | int) -> str:
    """A subject-safe name for a key: 128 bits of BLAKE2b over the length-prefixed parts."""
    key = "".join(f"{len(str(part))}:{part}" for part in parts)
    raw = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=4096)
def _target_attempts(namespace: str, tenant: str, bus: str, rule: str, target_id: str) -> str:
    """`<ns>.attempts.<tenant>.<bus>.<target>.`: the same for every attempt of a target, and a
    digest costs about as much as the rest of writing an attempt's message, so it is kept."""
    return f"{namespace}.attempts.{token(tenant)}.{token(bus)}.{digest(rule, target_id)}."


def lane_of(d: NewDelivery, replay: str | None = None) -> str:
    """The lane a new delivery joins: its ordered group's, or (unordered) one of its own."""
    if d.ordering_key is not None:
        return digest("o", d.tenant, d.bus, d.rule, d.target_id, d.ordering_key)
    if replay is not None:
        return digest("p", d.tenant, replay, d.bus, d.position, d.rule, d.target_id)
    return digest("r", d.tenant, d.bus, d.position, d.rule, d.target_id)


def route_msg_id(d: NewDelivery, replay: str | None = None) -> str:
    """The `Nats-Msg-Id` of a routed (or replayed) delivery: `bus/position/rule/target`, hashed
    with the tenant (and the replay), so routing a run again stores nothing twice."""
    if replay is not None:
        return digest("p", d.tenant, replay, d.bus, d.position, d.rule, d.target_id)
    return digest("r", d.tenant, d.bus, d.position, d.rule, d.target_id)


class MemberMeta(msgspec.Struct, frozen=True, omit_defaults=True):
    """A member message's header: the delivery without its payload.

    `id` is set on a redriven delivery, which keeps the id it had (otherwise the id is the
    message's stream sequence). `due_us` is when it may first be attempted, `age_from_us`
    where its maximum event age counts from.
    """

    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int
    recorded_us: int
    content_type: str
    due_us: int
    age_from_us: int
    ordering_key: str | None = None
    id: int = 0
    last_error: str | None = None


class LaneState(msgspec.Struct, frozen=True, omit_defaults=True):
    """A lane's record in the table: its head delivery, or (`head == 0`) that it is idle.

    `member` is the members-stream sequence of the head's message; an idle lane keeps the one
    of the delivery that finished last, so the next head is the first message after it.
    """

    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    ordered: bool = False
    head: int = 0
    member: int = 0
    recorded_us: int = 0
    due_us: int = 0
    age_from_us: int = 0
    lease_until_us: int = 0
    attempts: int = 0
    last_error: str | None = None

    @property
    def live(self) -> bool:
        return self.head != 0

    @property
    def ready_at(self) -> int:
        """When it may be leased: its due time, or when the lease that holds it runs out."""
        return max(self.due_us, self.lease_until_us)

    def idle(self) -> LaneState:
        return LaneState(self.tenant, self.bus, self.rule, self.target_id, self.ordered,
                         member=self.member)  # fmt: skip


def head_state(meta: MemberMeta, seq: int) -> LaneState:
    """The lane's record once the delivery in member message `seq` is its head."""
    return LaneState(
        tenant=meta.tenant,
        bus=meta.bus,
        rule=meta.rule,
        target_id=meta.target_id,
        ordered=meta.ordering_key is not None,
        head=meta.id or seq,
        member=seq,
        recorded_us=meta.recorded_us,
        due_us=meta.due_us,
        age_from_us=meta.age_from_us,
        last_error=meta.last_error,
    )


class DeadRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A dead letter in the table, with its payload (its member message is gone)."""

    id: int
    lane: str
    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int
    recorded_us: int
    dead_us: int
    attempts: int
    content_type: str
    payload: bytes
    last_error: str | None = None
    ordering_key: str | None = None


class RouteCursor(msgspec.Struct, frozen=True):
    position: int


class ReplayMark(msgspec.Struct, frozen=True):
    seq: int
    replayed: int


encode: Final = msgspec.json.Encoder().encode
decode_meta: Final = msgspec.json.Decoder(MemberMeta).decode
decode_lane: Final = msgspec.json.Decoder(LaneState).decode
decode_dead: Final = msgspec.json.Decoder(DeadRecord).decode
decode_cursor: Final = msgspec.json.Decoder(RouteCursor).decode
decode_replay: Final = msgspec.json.Decoder(ReplayMark).decode


@dataclass(frozen=True)
class QueueLayout(TableLayout):
    """The names of one installation's delivery queue (its `namespace`, as the event log's)."""

    TABLE: ClassVar[str] = "delivery_queue"

    @property
    def members_stream(self) -> str:
        return f"{self.namespace}_deliveries"

    @property
    def members_subjects(self) -> str:
        return f"{self.namespace}.deliveries.>"

    def member_subject(self, tenant: TenantName, lane: str, *, ordered: bool) -> str:
        return f"{self.namespace}.deliveries.{token(tenant)}.{'o' if ordered else 'u'}.{lane}"

    def tenant_members(self, tenant: TenantName) -> str:
        return f"{self.namespace}.deliveries.{token(tenant)}.>"

    @property
    def ordered_members(self) -> str:
        return f"{self.namespace}.deliveries.*.o.*"

    # The delivery history (`queue.jetstream.history`): an attempt's subject is
    # `<ns>.attempts.<tenant>.<bus>.<target>.<event>`, target and event digested.

    @property
    def attempts_stream(self) -> str:
        return f"{self.namespace}_attempts"

    @property
    def attempts_subjects(self) -> str:
        return f"{self.namespace}.attempts.>"

    def attempt_subject(
        self, tenant: TenantName, bus: str, rule: str, target_id: str, event_id: str
    ) -> str:
        return _target_attempts(self.namespace, tenant, bus, rule, target_id) + digest(event_id)

    def event_attempts(self, tenant: TenantName, bus: str, event_id: str) -> str:
        return f"{self.namespace}.attempts.{token(tenant)}.{token(bus)}.*.{digest(event_id)}"

    def target_attempts(self, tenant: TenantName, bus: str, rule: str, target_id: str) -> str:
        return _target_attempts(self.namespace, tenant, bus, rule, target_id) + "*"

    def tenant_attempts(self, tenant: TenantName, bus: str | None) -> str:
        on_bus = "*" if bus is None else token(bus)
        return f"{self.namespace}.attempts.{token(tenant)}.{on_bus}.>"

    def lane_key(self, lane: str) -> str:
        return self.key("lane", lane)

    def dead_key(self, delivery_id: int) -> str:
        return self.key("dead", str(delivery_id))

    def cursor_key(self, bus: BusRef) -> str:
        return self.key("cursor", token(bus.tenant), token(bus.bus))

    def replay_key(self, tenant: TenantName, replay: str) -> str:
        return self.key("replay", token(tenant), token(replay))

    def key_of(self, subject: str) -> tuple[str, str]:
        """A table subject as (kind, name): `("lane", lane)`, `("dead", id)`, ..."""
        kind, _, name = subject[len(self.bucket) + 5 :].partition(".")
        return kind, name
