"""The endpoints' state machine, run by each site for the endpoints it is part of.

The secondary watches the primary: each second it probes the primary's readiness; a probe that
fails, or takes longer than the policy's latency, is a failed evaluation. `evaluations` failed
ones in a row within `window_seconds` move the endpoint healthy -> failing-over -> failed-over,
the secondary active. Once the primary has answered well for `recovery_seconds`, it moves
failed-over -> failing-back, waits until the events only the secondary took are replicated
back, and then -> healthy on the primary. The secondary tells the primary each new state (again
until the primary has it), and publishes each transition as a CloudEvent on the tenant's
`default` bus.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from stellwerk.auth import Principal
from stellwerk.clock import to_us, utc_now
from stellwerk.events import CloudEvent, format_rfc3339
from stellwerk.service import NotFound, Platform, ServiceError
from stellwerk.sites.endpoints import Endpoints
from stellwerk.sites.link import PeerLink
from stellwerk.sites.model import EndpointState, HealthPolicy, Routed, State, Transition
from stellwerk.sites.peers import Peers
from stellwerk.sites.rules import rule_snapshot
from stellwerk.sites.signals import SAMPLES, Reading, reading, signals
from stellwerk.sites.store import EndpointRecord, SitesStore

log = structlog.get_logger("stellwerk.sites")

ACTOR: Final = "sites-failover"
TICK_SECONDS: Final = 1.0
# With no endpoint on this site there is nothing to watch until one is made (a signal): this
# long at most between looks, in case a signal was missed.
IDLE_SECONDS: Final = 10.0
EVENT_SOURCE: Final = "stellwerk:sites"
EVENT_TYPE: Final = "stellwerk.endpoint.state-changed"
EVENT_BUS: Final = "default"
RULES_AGAIN_SECONDS: Final = 30.0
STATES: Final[tuple[State, ...]] = ("healthy", "failing-over", "failed-over", "failing-back")
_encode: Final = msgspec.json.Encoder().encode


@dataclass
class Watch:
    """What the secondary remembers of one endpoint between ticks."""

    failures: list[float] = field(default_factory=list)  # loop times of failed evaluations
    healthy_since: float | None = None
    told: tuple[str, str, int] | None = None  # the state the primary acknowledged
    # The primary's /metrics readings of the last window: (loop time, reading), oldest first.
    readings: list[tuple[float, Reading]] = field(default_factory=list)


class FailoverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "stellwerk_endpoint_state",
            "1 for the state an endpoint is in (as this site sees it), 0 for the others",
            ["tenant", "endpoint", "state"],
            registry=registry,
        )
        self.failovers = Counter(
            "stellwerk_endpoint_failovers",
            "Times an endpoint failed over to its secondary",
            ["tenant", "endpoint"],
            registry=registry,
        )


class Failover:
    def __init__(
        self,
        platform: Platform,
        store: SitesStore,
        peers: Peers,
        endpoints: Endpoints,
        link: PeerLink,
        metrics: FailoverMetrics,
        *,
        tick: float = TICK_SECONDS,
        idle: float | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._platform = platform
        self._store = store
        self._peers = peers
        self._endpoints = endpoints
        self._link = link
        self._metrics = metrics
        self._tick = tick
        self._idle = IDLE_SECONDS if idle is None else idle
        self._clock = clock
        self._heard = asyncio.Event()
        self._watches: dict[tuple[str, str], Watch] = {}
        # What the other site of each endpoint acknowledged of our routed positions.
        self._shared: dict[tuple[str, str], dict[str, int]] = {}
        # The digest of the rules the other site of each endpoint took last from this one, and
        # when (loop time): sent again after `RULES_AGAIN_SECONDS` even if unchanged, so that a
        # rule made on the other site meanwhile gives way to the active site's.
        self._rules: dict[tuple[str, str], tuple[str, float]] = {}
        self._rules_failing: set[tuple[str, str]] = set()

    def heard(self) -> None:
        """Peers or endpoints changed (in this process or another)."""
        self._heard.set()

    async def run(self) -> None:
        local = self._link.local_site
        while True:
            started = asyncio.get_running_loop().time()
            self._heard.clear()
            records = await self._store.endpoints()
            await asyncio.gather(*(self._step(record) for record in records))
            if any(local in (r.spec.primary, r.spec.secondary) for r in records):
                # Watching: on the tick alone (a change must not hasten the probes).
                elapsed = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, self._tick - elapsed))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle):
                    await self._heard.wait()

    async def _step(self, record: EndpointRecord) -> None:
        local = self._link.local_site
        spec = record.spec
        if local not in (spec.primary, spec.secondary):
            return
        try:
            principal = await self._platform.tenants.acting(record.tenant_id, ACTOR)
        except NotFound:
            return
        for state in STATES:
            value = 1 if state == record.state else 0
            self._metrics.state.labels(principal.tenant, record.name, state).set(value)
        if not record.mirrored:
            await self._endpoints.mirror(principal, record)
        if local == spec.secondary:
            await self._watch(principal, record)
        if record.active == local:
            await self.share_routed(principal, record)
            await self.share_rules(principal, record)

    async def share_rules(self, principal: Principal, record: EndpointRecord) -> None:
        """Send the other site the rules of the endpoint's buses when they changed: it makes
        its rules on them the same, to deliver alike once it takes over."""
        local, spec = self._link.local_site, record.spec
        other = spec.secondary if local == spec.primary else spec.primary
        body, digest = await rule_snapshot(self._platform, principal, spec.buses)
        key = (record.tenant_id, record.name)
        now = asyncio.get_running_loop().time()
        sent = self._rules.get(key)
        if sent is not None and sent[0] == digest and now - sent[1] < RULES_AGAIN_SECONDS:
            return
        path = f"/v1/peers/{local}/rules"
        problem = await self._link.send(principal, other, "PUT", path, body, within=5.0)
        if problem is None:
            self._rules[key] = (digest, now)
            self._rules_failing.discard(key)
        elif key not in self._rules_failing:  # once per spell: a peer that is down fails alike
            self._rules_failing.add(key)
            log.warning("mirroring rules to peer failing", site=other, error=problem)

    async def share_routed(self, principal: Principal, record: EndpointRecord) -> None:
        """Tell the other site, standing by, how far this one has delivered the endpoint's buses
        (when that moved): it moves its router past what is delivered already."""
        local, spec = self._link.local_site, record.spec
        other = spec.secondary if local == spec.primary else spec.primary
        through: dict[str, int] = {}
        for bus in spec.buses:
            # Not the router's cursor alone: a delivery queued here but not made yet must be
            # made by the other site if this one dies, so the other stops before its event.
            delivered = await self._platform.tail.delivered(principal, bus)
            if delivered is not None:
                through[bus] = to_us(delivered)
        key = (record.tenant_id, record.name)
        if not through or self._shared.get(key) == through:
            return
        path = f"/v1/peers/{local}/routed"
        body = _encode(Routed(buses=through))
        if await self._link.send(principal, other, "PUT", path, body, within=1.0) is None:
            self._shared[key] = through

    async def _watch(self, principal: Principal, record: EndpointRecord) -> None:
        spec = record.spec
        policy = spec.health
        watch = self._watches.setdefault((record.tenant_id, record.name), Watch())
        now = asyncio.get_running_loop().time()
        began = now
        problem = await self._link.probe(principal, spec.primary, within=_probe_seconds(policy))
        took = asyncio.get_running_loop().time() - began
        if problem is None and took * 1000 > policy.latency_p99_ms:
            problem = (
                f"the primary answered in {took * 1000:.0f} ms (over {policy.latency_p99_ms:g})"
            )
        if problem is None:
            problem = await self._signals(principal, record, watch, now)
        if problem is not None:
            watch.failures = [t for t in watch.failures if now - t <= policy.window_seconds]
            watch.failures.append(now)
            watch.healthy_since = None
        else:
            watch.failures.clear()
            if watch.healthy_since is None:
                watch.healthy_since = now
        state, active = record.state, record.active
        if state in ("healthy", "failing-over") and len(watch.failures) >= policy.evaluations:
            reason = f"{len(watch.failures)} failed evaluations of {spec.primary}: {problem}"
            history = [*record.history, Transition(self._clock(), "failing-over", active, reason)]
            history.append(Transition(self._clock(), "failed-over", spec.secondary, reason))
            record = await self._move(principal, record, "failed-over", spec.secondary, history)
            self._metrics.failovers.labels(principal.tenant, record.name).inc()
            log.warning("endpoint failed over", endpoint=record.name, to=spec.secondary, why=reason)
        elif state == "failed-over" and watch.healthy_since is not None:
            if now - watch.healthy_since >= policy.recovery_seconds:
                reason = f"{spec.primary} healthy for {now - watch.healthy_since:.0f} s"
                history = [
                    *record.history,
                    Transition(self._clock(), "failing-back", active, reason),
                ]
                record = await self._move(principal, record, "failing-back", active, history)
        elif state == "failing-back":
            if problem is not None:
                reason = f"failback stopped: {problem}"
                history = [
                    *record.history,
                    Transition(self._clock(), "failed-over", active, reason),
                ]
                record = await self._move(principal, record, "failed-over", active, history)
            elif await self._caught_up(principal, record):
                reason = f"{spec.primary} has every event {spec.secondary} took"
                history = [
                    *record.history,
                    Transition(self._clock(), "healthy", spec.primary, reason),
                ]
                record = await self._move(principal, record, "healthy", spec.primary, history)
                log.info("endpoint failed back", endpoint=record.name, to=spec.primary)
        await self._tell_primary(principal, record, watch)

    async def _signals(
        self, principal: Principal, record: EndpointRecord, watch: Watch, now: float
    ) -> str | None:
        """The primary's own signals over the window (`stellwerk.sites.signals`): why they fail
        the policy, or None (also when it shows no metrics: the probe judged it up)."""
        spec, policy = record.spec, record.spec.health
        # Only the three series: the whole exposition cost the primary's gateway about 2.6 ms
        # of its event loop per reading, which ingest requests arriving meanwhile waited for.
        text = await self._link.metrics(principal, spec.primary, _probe_seconds(policy), SAMPLES)
        if text is None:
            return None
        try:
            taken = reading(text, principal.tenant, spec.buses)
        except ValueError:
            return None  # not a Prometheus exposition: nothing to judge by
        watch.readings.append((now, taken))
        # Keep one reading at least a window old: the signals span the whole window.
        while len(watch.readings) > 2 and now - watch.readings[1][0] >= policy.window_seconds:
            watch.readings.pop(0)
        if len(watch.readings) < 2:
            return None
        seen = signals(watch.readings[0][1], taken)
        return seen.problem(policy.error_rate, policy.latency_p99_ms)

    async def _caught_up(self, principal: Principal, record: EndpointRecord) -> bool:
        for bus in record.spec.buses:
            if (await self._peers.lag(principal, record.spec.primary, bus)).lag_events:
                return False
        return True

    async def _move(
        self,
        principal: Principal,
        record: EndpointRecord,
        state: State,
        active: str,
        history: list[Transition],
    ) -> EndpointRecord:
        await self._store.set_state(
            principal.tenant_id,
            record.name,
            state=state,
            active=active,
            history=history,
            now=self._clock(),
        )
        await self._publish(principal, record, history[len(record.history) :])
        moved = await self._store.endpoint(principal.tenant_id, record.name)
        return moved if moved is not None else record

    async def _publish(
        self, principal: Principal, record: EndpointRecord, transitions: list[Transition]
    ) -> None:
        events = [
            CloudEvent(
                id=f"{record.name}-{self._link.local_site}-{format_rfc3339(t.at)}-{t.state}",
                source=EVENT_SOURCE,
                type=EVENT_TYPE,
                subject=record.name,
                time=format_rfc3339(t.at),
                data={
                    "endpoint": record.name,
                    "state": t.state,
                    "active": t.active,
                    "reason": t.reason,
                    "site": self._link.local_site,
                },
            )
            for t in transitions
        ]
        try:
            await self._platform.ingest.publish(principal.ref, EVENT_BUS, events)
        except ServiceError as exc:
            log.warning("endpoint transition not published", endpoint=record.name, error=str(exc))

    async def _tell_primary(
        self, principal: Principal, record: EndpointRecord, watch: Watch
    ) -> None:
        told = (record.state, record.active, len(record.history))
        if watch.told == told:
            return
        state = EndpointState(state=record.state, active=record.active, history=record.history)
        path = f"/v1/peers/{self._link.local_site}/endpoints/{record.name}/state"
        problem = await self._link.send(
            principal, record.spec.primary, "PUT", path, _encode(state), within=1.0
        )
        if problem is None:
            watch.told = told


def _probe_seconds(policy: HealthPolicy) -> float:
    """How long a probe may wait: past twice the latency bound it has failed anyway."""
    return min(5.0, max(0.2, 2 * policy.latency_p99_ms / 1000))
