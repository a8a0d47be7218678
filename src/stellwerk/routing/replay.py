"""Replays: re-send a time window of an archive to the rules of its bus, paced and resumable.

How it is shaped and why: docs/replays.md ("stellwerk.routing.replay").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import structlog
from prometheus_client import Counter, Gauge

from stellwerk.events import REPLAY_NAME
from stellwerk.ops import Metrics, cancelled_meanwhile
from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.routing.router import RuleSet, RuleSource, deliveries_of
from stellwerk.seams import (
    ArchivedEvent,
    ArchiveStore,
    CursorConflict,
    EventLog,
    NewDelivery,
    QueueClosed,
    RouteSink,
)
from stellwerk.storage.control import ControlPlane, ReplayRecord

DEFAULT_BATCH: Final = 1000  # archived events per route_replay (one transaction)
MATCH_CHUNK: Final = 100  # events matched at a time before the event loop serves others
DEFAULT_POLL_SECONDS: Final = 1.0
# With no replay running here, a look at the control plane this often: a replay created or
# cancelled through the API arrives as a change signal (`notify`, `cancel`) at once, so this
# only catches a signal lost. Each look is two queries: once a second, in every idle pipeline
# process, they were a share of its idle CPU.
IDLE_POLL_SECONDS: Final = 10.0
PROGRESS_SECONDS: Final = 1.0  # how often a job writes its progress to the control plane
ARCHIVER_POLL_SECONDS: Final = 0.05
MAX_ERRORS: Final = 5  # errors in a row before a replay is given up as failed
MAX_BACKOFF_SECONDS: Final = 5.0

log = structlog.get_logger("stellwerk.replay")


class ReplayHooks(Protocol):
    def on_replayed(self, tenant: TenantName, events: int, deliveries: int) -> None: ...

    def on_running(self, jobs: int) -> None: ...

    def on_finished(self, tenant: TenantName, state: str) -> None: ...


class ReplayMetrics:
    """`stellwerk_replayed_events_total{tenant}`, `stellwerk_replay_deliveries_total{tenant}`,
    `stellwerk_replays_running` and `stellwerk_replays_finished_total{tenant,state}`."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.events = Counter(
            "stellwerk_replayed_events_total",
            "Archived events replayed (each counted once, whatever it matched).",
            ["tenant"],
            registry=registry,
        )
        self.deliveries = Counter(
            "stellwerk_replay_deliveries_total",
            "Deliveries that replays put in the queue.",
            ["tenant"],
            registry=registry,
        )
        self.running = Gauge(
            "stellwerk_replays_running", "Replays this process runs now.", registry=registry
        )
        self.finished = Counter(
            "stellwerk_replays_finished_total",
            "Replays this process finished, by final state.",
            ["tenant", "state"],
            registry=registry,
        )

    def on_replayed(self, tenant: TenantName, events: int, deliveries: int) -> None:
        self.events.labels(tenant).inc(events)
        self.deliveries.labels(tenant).inc(deliveries)

    def on_running(self, jobs: int) -> None:
        self.running.set(jobs)

    def on_finished(self, tenant: TenantName, state: str) -> None:
        self.finished.labels(tenant, state).inc()


class NoReplayHooks:
    def on_replayed(self, tenant: TenantName, events: int, deliveries: int) -> None:
        pass

    def on_running(self, jobs: int) -> None:
        pass

    def on_finished(self, tenant: TenantName, state: str) -> None:
        pass


class Pacer:
    """Holds a stream of events to `rate` per second (0: no limit).

    Time lost while the sender was slower than the rate is made up for one second at most, so a
    stall is not followed by a burst.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._due = clock()

    def delay(self, events: int) -> float:
        """Seconds to wait after sending `events` more, before sending again."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._due = max(self._due, now - 1.0) + events / self.rate
        return max(0.0, self._due - now)


def replay_name_suffix(name: str) -> bytes:
    """What `with_replay_name` puts in place of a body's closing brace."""
    return b',"' + REPLAY_NAME.encode() + b'":"' + name.encode() + b'"}'


def with_replay_name(body: bytes, suffix: bytes) -> bytes:
    """The event's JSON with `"replayname"` added last (`suffix`), so that it wins over a copy.

    Stored bodies are one compact object from `{` to `}` (the log writes Stellwerk's extensions
    the same way); replay names follow the name rule, so they need no escaping.
    """
    if body[-1:] != b"}":
        raise ValueError("an archived event body is not a JSON object")
    return body[:-1] + suffix


def narrowed(rules: RuleSet, chosen: Sequence[str]) -> RuleSet:
    """The part of a bus's rule set that a replay to `chosen` rules uses (those that exist and
    are enabled now): matching a backfill to one rule costs one rule, not the whole bus."""
    matcher, envelope = Matcher(), Matcher()
    for name in chosen:
        for part, whole in ((matcher, rules.matcher), (envelope, rules.envelope)):
            if name in whole:
                part.add(name, whole.pattern(name))
    scheduled = frozenset(name for name in chosen if name in rules.scheduled)
    names = [*matcher.names, *envelope.names, *scheduled]
    return RuleSet(
        matcher,
        {name: rules.targets.get(name, ()) for name in names},
        envelope,
        scheduled,
        rules.scheduled_envelope & scheduled,
    )


def replay_deliveries(
    tenant: TenantName,
    record: ReplayRecord,
    rules: RuleSet,
    events: Sequence[ArchivedEvent],
) -> list[NewDelivery]:
    """The deliveries of a batch of archived events to `rules` (the replay's, see `narrowed`),
    built as the router builds them (transformers, ordering), with `replayname` in each event."""
    out: list[NewDelivery] = []
    if not len(rules):
        return out
    suffix = replay_name_suffix(record.name)
    for archived in events:
        body = with_replay_name(archived.body, suffix)
        # A delivery of the body itself (no transformer, no envelope) names the archived copy
        # its bytes come from: a queue in the archive's file stores only the replay name.
        deliveries_of(
            tenant, record.bus, archived, body, rules, out,
            archived_seq=archived.seq, archived_kept=len(archived.body) - 1,
        )  # fmt: skip
    return out


@dataclass
class _Job:
    tenant: TenantName
    record: ReplayRecord
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    _bus_rules: RuleSet | None = None
    _rules: RuleSet | None = None
    # The read of the page after `seq`, started while the page before it is matched.
    read_ahead: tuple[int, asyncio.Future[list[ArchivedEvent]]] | None = None

    def drop_read_ahead(self) -> None:
        if self.read_ahead is not None:
            _discard(self.read_ahead[1])
            self.read_ahead = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.tenant_id, self.record.name)

    def rules(self, bus_rules: RuleSet) -> RuleSet:
        """The replay's rules out of the bus's current ones, narrowed again only when they
        changed (the rule book swaps in a new rule set on every change)."""
        if self.record.rules is None:
            return bus_rules
        if bus_rules is not self._bus_rules or self._rules is None:
            self._bus_rules, self._rules = bus_rules, narrowed(bus_rules, self.record.rules)
        return self._rules


class ReplayRunner:
    """Runs the replays the control plane says are running; see the module's docstring.

    `rules_for(bus)` gives the bus's current rules (the rule book's). `wake` is set when
    a batch brought deliveries, so the delivery worker starts at once.
    """

    def __init__(
        self,
        control: ControlPlane,
        archives: ArchiveStore,
        event_log: EventLog,
        queue: RouteSink,
        rules_for: RuleSource,
        *,
        rate: float,
        max_running: int,
        wake: asyncio.Event | None = None,
        hooks: ReplayHooks | None = None,
        batch: int = DEFAULT_BATCH,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
    ) -> None:
        self.control = control
        self.archives = archives
        self.event_log = event_log
        self.queue = queue
        self.rules_for = rules_for
        self.rate = rate
        self.max_running = max_running
        self.wake = wake
        self.hooks: ReplayHooks = hooks or NoReplayHooks()
        # A batch is at most a tenth of a second of the rate, so pacing stays smooth.
        self.batch = batch if rate <= 0 else max(1, min(batch, int(rate / 10)))
        self.poll_seconds = poll_seconds
        self.idle_poll_seconds = max(poll_seconds, idle_poll_seconds)
        self._changed = asyncio.Event()
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._stopping = False
        self._closed = False

    def notify(self) -> None:
        """A replay was created (or a slot freed): look at the control plane now."""
        self._changed.set()

    def cancel(self, tenant_id: TenantId, name: str) -> None:
        """The replay was cancelled in the control plane: stop its job now, if it runs here."""
        job = self._jobs.get((tenant_id, name))
        if job is not None:
            job.stop.set()
        self._changed.set()

    def close(self) -> None:
        """Stop for good: `run` returns and does not start again (the process is stopping)."""
        self._closed = True
        self.stop()

    def stop(self) -> None:
        """Stop every job (running replays stay `running`, to resume on the next start)."""
        self._stopping = True
        for job in self._jobs.values():
            job.stop.set()
        self._changed.set()

    async def run(self, *, burst: bool = False) -> None:
        """Run replays until `stop()`; with `burst`, until no replay is running or queued.

        After a `stop()` it may run again (the scheduler's lease came back); after `close()`
        it returns at once, even if it had not started yet when `close()` came.
        """
        self._stopping = self._closed
        try:
            while not self._stopping:
                self._changed.clear()
                try:
                    await self._schedule()
                except Exception:
                    if cancelled_meanwhile():
                        raise  # a cancellation the database driver turned into an error
                    log.exception("replay_scheduling_failed")
                if burst and not self._jobs:
                    return
                wait = self.poll_seconds if self._jobs else self.idle_poll_seconds
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
        finally:
            for job in self._jobs.values():
                job.stop.set()
            tasks = [job.task for job in self._jobs.values() if job.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            self._jobs.clear()
            self.hooks.on_running(0)

    async def _schedule(self) -> None:
        for key in [k for k, job in self._jobs.items() if job.task and job.task.done()]:
            del self._jobs[key]
        await self.control.replays.promote(self.max_running)
        running = await self.control.replays.running()
        wanted = {(record.tenant_id, record.name) for _, record in running}
        for key, job in self._jobs.items():
            if key not in wanted:
                job.stop.set()  # cancelled by another process
        for tenant, record in running:
            job = _Job(tenant, record)
            if job.key in self._jobs or self._stopping:
                continue
            if len(self._jobs) >= self.max_running:
                break  # a stopping job still holds its slot here
            job.task = asyncio.create_task(self._run_job(job), name=f"replay-{record.name}")
            job.task.add_done_callback(self._job_done)
            self._jobs[job.key] = job
        self.hooks.on_running(len(self._jobs))

    def _job_done(self, task: asyncio.Task[None]) -> None:
        # A job that died (the control plane failing as it finished) is started again by the
        # next look at the control plane, which finds its replay still running.
        if not task.cancelled() and task.exception() is not None:
            log.error("replay_job_died", task=task.get_name(), error=repr(task.exception()))
        self._changed.set()

    async def _run_job(self, job: _Job) -> None:
        record = job.record
        bound = log.bind(tenant=job.tenant, replay=record.name, bus=record.bus)
        errors = 0
        while not job.stop.is_set():
            try:
                outcome = await self._replay(job)
            except QueueClosed:
                return  # shutting down: the replay stays running and resumes next time
            except Exception as exc:
                errors += 1
                bound.exception("replay_error", errors=errors)
                if errors < MAX_ERRORS:
                    backoff = min(MAX_BACKOFF_SECONDS, 0.1 * 2**errors)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await job.stop.wait()
                    continue
                outcome = ("failed", f"{type(exc).__name__}: {exc}")
            if outcome is None:
                return  # stopped or cancelled
            state, error = outcome
            replayed = (await self.queue.replay_cursor(job.tenant, record.name)).replayed
            if await self.control.replays.finish(
                record.tenant_id, record.name, state, replayed=replayed, error=error
            ):
                self.hooks.on_finished(job.tenant, state)
                bound.info("replay_finished", state=state, replayed=replayed, error=error)
            return

    async def _replay(self, job: _Job) -> tuple[Literal["completed", "failed"], str | None] | None:
        """Replay from the cursor to the end of the window; None if stopped on the way."""
        tenant, record = job.tenant, job.record
        if not await self._archiver_caught_up(job):
            if job.stop.is_set():
                return None
            return ("failed", f"archive {record.archive!r} was deleted")
        cursor = await self.queue.replay_cursor(tenant, record.name)
        total = record.total
        if total == 0:
            total = await self.archives.count_window(record.archive_uid, record.start, record.end)
        seq, replayed = cursor
        pacer = Pacer(self.rate)
        loop = asyncio.get_running_loop()
        next_note = loop.time()
        # The next batch is read and matched while this one commits; it is routed only after
        # this one committed, so a failed batch is never passed over.
        upcoming = asyncio.ensure_future(self._prepare(job, seq))
        try:
            while not job.stop.is_set():
                if loop.time() >= next_note:
                    state = await self.control.replays.progress(
                        record.tenant_id, record.name, replayed=replayed, total=total
                    )
                    if state != "running":
                        return None  # cancelled elsewhere
                    next_note = loop.time() + PROGRESS_SECONDS
                events, deliveries = await upcoming
                if not events:
                    return ("completed", None)
                upcoming = asyncio.ensure_future(self._prepare(job, events[-1].seq))
                try:
                    await self.queue.route_replay(
                        tenant, record.name, events[-1].seq, len(events), deliveries, after=seq
                    )
                except CursorConflict:
                    # Another process runs this replay too: go on from where it got.
                    await _cancelled(upcoming)
                    seq, replayed = await self.queue.replay_cursor(tenant, record.name)
                    upcoming = asyncio.ensure_future(self._prepare(job, seq))
                    continue
                seq = events[-1].seq
                replayed += len(events)
                self.hooks.on_replayed(tenant, len(events), len(deliveries))
                if deliveries and self.wake is not None:
                    self.wake.set()
                delay = pacer.delay(len(events))
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await job.stop.wait()
            return None
        finally:
            # `wait`: the read ahead ends whatever it was doing, and a cancellation of this
            # task still reaches its caller (awaiting `upcoming` under a suppress would eat it).
            await _cancelled(upcoming)
            job.drop_read_ahead()

    async def _prepare(
        self, job: _Job, after_seq: int
    ) -> tuple[list[ArchivedEvent], list[NewDelivery]]:
        """The next batch of the window after `after_seq`, and its deliveries by the bus's rules
        as they are now.

        The read of the batch after it starts before this one is matched: reading (a thread,
        mostly outside the GIL) and matching (this event loop) overlap, as matching and the
        queue's writes do.
        """
        ahead, job.read_ahead = job.read_ahead, None
        if ahead is not None and ahead[0] == after_seq:
            events = await ahead[1]
        else:
            if ahead is not None:
                _discard(ahead[1])  # the replay went on from elsewhere (a cursor conflict)
            events = await self._read(job, after_seq)
        if not events:
            return events, []
        job.read_ahead = (events[-1].seq, asyncio.ensure_future(self._read(job, events[-1].seq)))
        record = job.record
        rules = self.rules_for(BusRef(job.tenant, record.bus))
        narrowed = job.rules(rules)
        deliveries: list[NewDelivery] = []
        for start in range(0, len(events), MATCH_CHUNK):
            if start:
                await asyncio.sleep(0)  # let live requests in between chunks
            chunk = events[start : start + MATCH_CHUNK]
            deliveries += replay_deliveries(job.tenant, record, narrowed, chunk)
        return events, deliveries

    async def _read(self, job: _Job, after_seq: int) -> list[ArchivedEvent]:
        record = job.record
        return await self.archives.read_window(
            record.archive_uid, record.start, record.end, after_seq=after_seq, limit=self.batch
        )

    async def _archiver_caught_up(self, job: _Job) -> bool:
        """Wait until the archiver has looked at what the bus's log holds now (False: the archive
        is gone, or the job was stopped)."""
        tenant, record = job.tenant, job.record
        bus = BusRef(tenant, record.bus)
        head = await self.event_log.last_position(bus)
        while not job.stop.is_set():
            if await self.archives.cursor(bus) >= head:
                return True
            archive = await self.control.archives.get(record.tenant_id, record.bus, record.archive)
            if archive is None or archive.uid != record.archive_uid:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ARCHIVER_POLL_SECONDS):
                    await job.stop.wait()
        return False


async def _cancelled(future: asyncio.Future[Any]) -> None:
    """Cancel `future` and wait until it has ended, whatever it was doing; its outcome is
    retrieved, so nothing is logged at garbage collection."""
    future.cancel()
    await asyncio.wait([future])
    if not future.cancelled():
        future.exception()


def _discard(future: asyncio.Future[Any]) -> None:
    """Cancel a read no one will wait for; its outcome is retrieved, so nothing is logged."""
    future.cancel()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
