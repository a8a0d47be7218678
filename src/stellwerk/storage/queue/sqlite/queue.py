"""The embedded delivery queue: its own SQLite file (WAL, `synchronous=FULL`), one writer thread.

Waiting operations run as SAVEPOINTs in one transaction, so many acks share one fsync; leases
live in memory, since a lost lease is only a redelivery (docs/storage.md, "The embedded
delivery queue"; which commits are synced: docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from stellwerk.clock import from_us, to_us, utc_now
from stellwerk.seams import (
    DeadLetter,
    DeliveryQueueError,
    ErasedDeliveries,
    LeasedDelivery,
    NewDelivery,
    PayloadMatch,
    QueueClosed,
    QueueDepth,
    ReplayCursor,
    TargetKey,
)
from stellwerk.storage.queue.contract import CheckedQueue, check_replay_cursor, check_route_cursor
from stellwerk.storage.sqlite import Checkpointer, InsertRows, WalBound

READY, WAITING, DEAD = 0, 1, 2
_T = TypeVar("_T")
_ACK_CHUNK: Final = 500  # ids per DELETE, below SQLite's host-parameter limit
_ERASE_PAGE: Final = 1000  # deliveries an erasure looks at per step

# Durable-format rule as for the event log: add columns with defaults and new tables only.
_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS targets (
        target INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL, bus TEXT NOT NULL, rule TEXT NOT NULL, target_id TEXT NOT NULL,
        UNIQUE (tenant, bus, rule, target_id)
    )""",
    """CREATE TABLE IF NOT EXISTS cursors (
        tenant TEXT NOT NULL, bus TEXT NOT NULL, position INTEGER NOT NULL,
        PRIMARY KEY (tenant, bus)
    ) WITHOUT ROWID""",
    # A replay's cursor: the archive seq it routed up to, and how many events that was.
    """CREATE TABLE IF NOT EXISTS replay_cursors (
        tenant TEXT NOT NULL, replay TEXT NOT NULL, seq INTEGER NOT NULL,
        replayed INTEGER NOT NULL, PRIMARY KEY (tenant, replay)
    ) WITHOUT ROWID""",
    # due_us: when a ready delivery may be leased next; while leased, when the lease expires.
    # age_from_us: where maximum_event_age counts from (recorded time, or the last redrive).
    """CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY,
        target INTEGER NOT NULL,
        state INTEGER NOT NULL,
        due_us INTEGER NOT NULL,
        leased INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        event_id TEXT NOT NULL,
        event_source TEXT NOT NULL,
        position INTEGER NOT NULL,
        recorded_us INTEGER NOT NULL,
        age_from_us INTEGER NOT NULL,
        payload BLOB NOT NULL,
        content_type TEXT NOT NULL,
        ordering_key TEXT,
        last_error TEXT,
        dead_us INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS ready_by_target ON deliveries (target, due_us) WHERE state = 0",
    """CREATE INDEX IF NOT EXISTS ordered_groups ON deliveries (target, ordering_key, id)
        WHERE ordering_key IS NOT NULL AND state < 2""",
    "CREATE INDEX IF NOT EXISTS dead_by_target ON deliveries (target, id) WHERE state = 2",
    # A payload that several deliveries of one `route` share (an event matched by many rules)
    # is stored once here; those deliveries keep an empty `payload` and point at it (`body`).
    # `refs` counts the deliveries that point at it; the last ack deletes it.
    """CREATE TABLE IF NOT EXISTS bodies (
        id INTEGER PRIMARY KEY, payload BLOB NOT NULL, refs INTEGER NOT NULL
    )""",
)
MAX_WAL_BYTES: Final = 64 * 1024 * 1024  # the writer checkpoints itself past this
_SHARED_MIN_BYTES: Final = 64  # smaller payloads are cheaper copied than pointed at
_COLUMNS: Final = (
    "d.id, d.target, d.attempts, d.event_id, d.event_source, d.position, d.recorded_us,"
    " d.age_from_us, coalesce(b.payload, d.payload), d.content_type, d.ordering_key,"
    " d.last_error"
)
_INSERT: Final = InsertRows(
    "INSERT INTO deliveries (id, target, state, due_us, event_id, event_source, position,"
    " recorded_us, age_from_us, payload, content_type, ordering_key, body)"
)
# Ids only: answered from the ready index alone, so reading past leased rows costs no row reads.
_DUE_IDS: Final = (
    "SELECT id FROM deliveries WHERE target = ? AND state = 0 AND due_us <= ?"
    " ORDER BY due_us, id LIMIT ?"
)
_EARLIEST: Final = "SELECT min(due_us) FROM deliveries WHERE target = ? AND state = 0"
_GROUP_BUSY: Final = (
    "SELECT 1 FROM deliveries WHERE target = ? AND ordering_key = ? AND state < 2 LIMIT 1"
)
_NEXT_IN_GROUP: Final = (
    "SELECT id, due_us FROM deliveries WHERE target = ? AND ordering_key = ? AND state = 1"
    " ORDER BY id LIMIT 1"
)
_DEAD_COLUMNS: Final = (
    "d.id, t.rule, t.target_id, d.event_id, d.event_source, d.position, d.recorded_us,"
    " d.dead_us, d.attempts, d.last_error, coalesce(b.payload, d.payload), d.content_type,"
    " d.ordering_key"
)


def _open(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit): the checkpointer's as it is,
    the writer's and the reader's after `_connect`."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    # FULL: a route or redrive that returned survives power loss, not just a crash.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    conn = _open(path)
    if writer:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise sqlite3.OperationalError(f"{path} cannot be put in WAL mode (got {mode})")
        conn.execute("PRAGMA cache_size = -32768")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread does it
        conn.execute(f"PRAGMA journal_size_limit = {MAX_WAL_BYTES}")
        for statement in _DDL:
            conn.execute(statement)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
        if "body" not in columns:  # a file from before shared bodies
            conn.execute("ALTER TABLE deliveries ADD COLUMN body INTEGER")
    else:
        conn.execute("PRAGMA query_only = ON")
    return conn


class _Operation:
    """`durable`: writes, in a write transaction (else a read-only one); `synced`: and must be
    on disk when it returns (`synchronous=FULL`), which only `route_replay` can do without."""

    __slots__ = ("durable", "future", "loop", "synced", "work")

    def __init__(
        self,
        work: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        durable: bool = True,
        synced: bool = True,
    ) -> None:
        self.work = work
        self.loop = loop
        self.durable = durable
        self.synced = durable and synced
        self.future: asyncio.Future[Any] = loop.create_future()


class _AckBatch:
    """Acks waiting for the writer together; `future` is the one operation's that writes them."""

    __slots__ = ("future", "ids")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.future: asyncio.Future[Any] | None = None


class _Writer:
    """One thread, one connection: runs operations in groups, one transaction per group."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        on_failure: Callable[[], None],
        checkpointer: Checkpointer,
        wal_bound: WalBound,
    ) -> None:
        self._conn = conn
        self._on_failure = on_failure
        self._checkpointer = checkpointer
        self._wal_bound = wal_bound
        self._synced = True  # the connection's `synchronous` is FULL (else NORMAL)
        self._cond = threading.Condition()
        self._queue: deque[_Operation] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="deliveries-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def submit(self, operation: _Operation) -> None:
        with self._cond:
            if self._stopping:
                raise QueueClosed("the delivery queue is closing")
            self._queue.append(operation)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                group = list(self._queue)
                self._queue.clear()
            reads = [operation for operation in group if not operation.durable]
            if reads:
                self._execute(reads, durable=False)
                group = [operation for operation in group if operation.durable]
            if group:
                self._sync(any(operation.synced for operation in group))
                self._execute(group, durable=True)
                self._checkpointer.nudge()
                self._wal_bound.after_group(self._conn)

    def _sync(self, synced: bool) -> None:
        if synced is not self._synced:
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if synced else 'NORMAL'}")
            self._synced = synced

    def _execute(self, group: list[_Operation], *, durable: bool) -> None:
        conn = self._conn
        outcomes: list[Any] = []
        try:
            # A group that only reads (leases) takes no write lock and commits nothing.
            conn.execute("BEGIN IMMEDIATE" if durable else "BEGIN")
            for operation in group:
                conn.execute("SAVEPOINT operation")
                try:
                    outcomes.append(operation.work(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO operation")
                    self._on_failure()
                    outcomes.append(exc)
                conn.execute("RELEASE operation")
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._on_failure()
            failure = DeliveryQueueError(f"the delivery queue could not commit: {exc}")
            outcomes = [failure] * len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for operation, outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(operation.loop, []).append((operation.future, outcome))
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has no one waiting
                loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in pairs:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class SqliteDeliveryQueue(CheckedQueue):
    """The `DeliveryQueue` on one file: `SqliteDeliveryQueue(data_dir / DELIVERIES_FILE)`.

    `clock` stamps dead letters and redrives and measures depth (a test can move it); `lease`
    takes its time from the caller.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.path = Path(path)
        self._clock = clock
        self._writer: _Writer | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._checkpointer: Checkpointer | None = None
        self._wal_bound: WalBound | None = None
        # Writer-thread state, rebuilt from the file whenever an operation fails.
        self._target_ids: dict[TargetKey, int] = {}
        self._keys: dict[int, TargetKey] = {}
        self._earliest: dict[int, int] = {}  # target -> lower bound of its earliest ready due_us
        self._stale = True
        self._last_id = 0  # the highest delivery id handed out by this process
        self._ack_lock = threading.Lock()  # the event loop adds to a batch the writer takes
        # Leases (see the module's docstring): delivery id -> (target, until_us), and how many
        # each target has. The writer changes them; `depth` reads them, hence the lock.
        self._lease_lock = threading.Lock()
        self._leases: dict[int, tuple[int, int]] = {}
        self._lease_counts: Counter[int] = Counter()
        self._acks: _AckBatch | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            raise DeliveryQueueError("the delivery queue was already started")
        self._write_conn = await asyncio.to_thread(_connect, self.path, writer=True)
        self._read_conn = await asyncio.to_thread(_connect, self.path, writer=False)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="deliveries-read")
        self._stale = True
        self._checkpointer = Checkpointer(
            functools.partial(_open, self.path), name="deliveries-checkpoint"
        )
        self._checkpointer.start()
        self._wal_bound = WalBound(self.path, max_bytes=MAX_WAL_BYTES)
        self._writer = _Writer(
            self._write_conn, self._mark_stale, self._checkpointer, self._wal_bound
        )
        self._writer.start()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        await asyncio.to_thread(writer.stop)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        if self._write_conn is not None:
            # A stopped queue is one compact file (if this fails, the next start reads the WAL).
            with contextlib.suppress(sqlite3.Error):
                self._write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.to_thread(reader.shutdown, wait=True)
        for conn in (self._write_conn, self._read_conn):
            if conn is not None:
                conn.close()
        self._write_conn = self._read_conn = None

    # -- routing -------------------------------------------------------------------------------

    async def _route(
        self, tenant: str, bus: str, position: int, deliveries: Sequence[NewDelivery]
    ) -> None:
        def work(conn: sqlite3.Connection) -> None:
            self._refresh(conn)
            row = conn.execute(
                "SELECT position FROM cursors WHERE tenant = ? AND bus = ?", (tenant, bus)
            ).fetchone()
            current = row[0] if row else 0
            check_route_cursor(tenant, bus, current, position, deliveries)
            self._enqueue(conn, deliveries)
            conn.execute(
                "INSERT INTO cursors (tenant, bus, position) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant, bus) DO UPDATE SET position = excluded.position",
                (tenant, bus, position),
            )

        await self._write(work)

    def _enqueue(
        self, conn: sqlite3.Connection, deliveries: Sequence[NewDelivery], now_us: int | None = None
    ) -> None:
        """Insert checked deliveries, due at their event's recorded time or (replays) at `now_us`.

        The due time is also where the maximum event age counts from.
        """
        rows = []
        heads: set[tuple[int, str]] = set()
        bodies = self._share_bodies(conn, deliveries)
        # Deliveries come in runs of one target and of one recorded time (the events of a log
        # group share theirs): each is looked up once per run, not once per delivery.
        key: TargetKey | None = None
        target = 0
        moment: datetime | None = None
        recorded = 0
        last_id = self._last_id
        for d in deliveries:
            if (
                key is None
                or d.rule != key.rule
                or d.target_id != key.target_id
                or d.bus != key.bus
                or d.tenant != key.tenant
            ):
                key = TargetKey(d.tenant, d.bus, d.rule, d.target_id)
                target = self._target(conn, key)
            state = READY
            if d.ordering_key is not None:
                group = (target, d.ordering_key)
                if group in heads or conn.execute(_GROUP_BUSY, group).fetchone():
                    state = WAITING
                heads.add(group)
            if d.recorded_time is not moment:
                moment = d.recorded_time
                recorded = to_us(moment)
            due = recorded if now_us is None else now_us
            if state == READY:
                self._lower(target, due)
            body = bodies.get(d.payload) if bodies else None
            last_id += 1
            rows.append(
                (last_id, target, state, due, d.event_id, d.event_source, d.position,
                 recorded, due, d.payload if body is None else b"", d.content_type,
                 d.ordering_key, body)
            )  # fmt: skip
        self._last_id = last_id
        _INSERT(conn, rows)
        if self._wal_bound is not None:
            self._wal_bound.grew(sum(len(d.payload) for d in deliveries))

    async def _route_replay(
        self,
        tenant: str,
        replay: str,
        seq: int,
        events: int,
        deliveries: Sequence[NewDelivery],
        *,
        after: int,
    ) -> None:
        now_us = to_us(self._clock())

        def work(conn: sqlite3.Connection) -> None:
            self._refresh(conn)
            current = self._replay_cursor(conn, tenant, replay)
            check_replay_cursor(tenant, replay, current.seq, after, seq)
            self._enqueue(conn, deliveries, now_us)
            conn.execute(
                "INSERT INTO replay_cursors (tenant, replay, seq, replayed) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant, replay) DO UPDATE"
                " SET seq = excluded.seq, replayed = replayed + excluded.replayed",
                (tenant, replay, seq, events),
            )

        # Unsynced: a batch lost to a power failure is lost with its cursor move, and replayed
        # again from the archive (see the module's docstring).
        await self._write(work, synced=False)

    async def replay_cursor(self, tenant: str, replay: str) -> ReplayCursor:
        return await self._read(lambda conn: self._replay_cursor(conn, tenant, replay))

    @staticmethod
    def _replay_cursor(conn: sqlite3.Connection, tenant: str, replay: str) -> ReplayCursor:
        row = conn.execute(
            "SELECT seq, replayed FROM replay_cursors WHERE tenant = ? AND replay = ?",
            (tenant, replay),
        ).fetchone()
        return ReplayCursor(0, 0) if row is None else ReplayCursor(row[0], row[1])

    @staticmethod
    def _share_bodies(
        conn: sqlite3.Connection, deliveries: Sequence[NewDelivery]
    ) -> dict[bytes, int]:
        """Store each payload that several of `deliveries` carry once; payload -> its body id.

        Payloads are shared by the deliveries of one event to several targets. When every
        delivery is of another event (a replay to one rule), there is nothing to share, and no
        payload is even hashed to find that out.
        """
        if len({d.position for d in deliveries}) == len(deliveries):
            return {}
        uses = Counter(d.payload for d in deliveries if len(d.payload) >= _SHARED_MIN_BYTES)
        return {
            payload: conn.execute(
                "INSERT INTO bodies (payload, refs) VALUES (?, ?) RETURNING id", (payload, refs)
            ).fetchone()[0]
            for payload, refs in uses.items()
            if refs > 1
        }

    async def cursor(self, tenant: str, bus: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT position FROM cursors WHERE tenant = ? AND bus = ?", (tenant, bus)
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._read(query)

    # -- leasing and outcomes ------------------------------------------------------------------

    async def _lease(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_target_limits: Mapping[TargetKey, int] | None,
    ) -> list[LeasedDelivery]:
        now_us = to_us(now)
        until_us = now_us + int(lease_seconds * 1_000_000)

        def work(conn: sqlite3.Connection) -> list[LeasedDelivery]:
            self._refresh(conn)
            caps: dict[int, int] = {}
            for key, cap in (per_target_limits or {}).items():
                target = self._target_ids.get(key)
                if target is not None:
                    caps[target] = cap
            due = sorted(
                (t for t, e in self._earliest.items() if e <= now_us),
                key=self._earliest.__getitem__,
            )
            out: list[LeasedDelivery] = []
            leases, counts = self._leases, self._lease_counts
            for target in due:
                room = min(limit - len(out), caps.get(target, limit))
                if room <= 0:
                    if len(out) >= limit:
                        break
                    continue
                # Rows leased now are still in the ready index: read past them.
                ids = conn.execute(_DUE_IDS, (target, now_us, room + counts[target])).fetchall()
                chosen: list[int] = []
                with self._lease_lock:
                    for (delivery_id,) in ids:
                        held = leases.get(delivery_id)
                        if held is not None and held[1] > now_us:
                            continue
                        if held is None:
                            counts[target] += 1
                        leases[delivery_id] = (target, until_us)
                        chosen.append(delivery_id)
                        if len(chosen) == room:
                            break
                if chosen:
                    marks = ",".join("?" * len(chosen))
                    rows = conn.execute(
                        f"SELECT {_COLUMNS} FROM deliveries AS d"
                        f" LEFT JOIN bodies AS b ON b.id = d.body WHERE d.id IN ({marks})",
                        chosen,
                    ).fetchall()
                    by_id = {row[0]: row for row in rows}
                    key = self._keys[target]
                    out.extend(_leased(key, by_id[i]) for i in chosen)
                earliest = conn.execute(_EARLIEST, (target,)).fetchone()[0]
                if earliest is None:
                    del self._earliest[target]
                else:
                    self._earliest[target] = earliest
            return out

        # Reads only: see the module's docstring.
        return await self._write(work, durable=False)

    def _unlease(self, delivery_id: int) -> None:
        with self._lease_lock:
            held = self._leases.pop(delivery_id, None)
            if held is not None:
                self._lease_counts[held[0]] -= 1

    async def ack(self, delivery_id: int) -> None:
        # Acks that arrive while one is waiting for the writer join it: one operation (and one
        # statement) for all of them instead of one each. Each caller still returns only after
        # the commit that holds its ack.
        writer = self._writer
        if writer is None:
            raise QueueClosed("the delivery queue is not open")
        with self._ack_lock:
            batch = self._acks
            if batch is None:
                batch = self._acks = _AckBatch()
                fresh = True
            else:
                fresh = False
            batch.ids.append(delivery_id)
        if fresh:
            operation = _Operation(
                functools.partial(self._ack_batch, batch), asyncio.get_running_loop()
            )
            batch.future = operation.future
            writer.submit(operation)
        assert batch.future is not None
        await asyncio.shield(batch.future)

    def _ack_batch(self, batch: _AckBatch, conn: sqlite3.Connection) -> None:
        with self._ack_lock:
            if self._acks is batch:
                self._acks = None  # later acks start a batch of their own
            ids = list(batch.ids)
        self._remove(conn, ids)

    def _remove(self, conn: sqlite3.Connection, ids: Sequence[int]) -> Counter[int]:
        """Delete finished (acked or erased) deliveries; return how many of each state went.

        The next delivery of an ordered group becomes ready, and a shared body goes with the
        last delivery that points at it.
        """
        states: Counter[int] = Counter()
        for start in range(0, len(ids), _ACK_CHUNK):
            chunk = ids[start : start + _ACK_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"DELETE FROM deliveries WHERE id IN ({marks})"
                " RETURNING target, state, ordering_key, body",
                chunk,
            ).fetchall()
            for delivery_id in chunk:
                self._unlease(delivery_id)
            released: Counter[int] = Counter()
            for target, state, ordering_key, body in rows:
                states[state] += 1
                if state == READY and ordering_key is not None:
                    self._promote(conn, target, ordering_key)
                if body is not None:
                    released[body] += 1
            if released:
                conn.executemany(
                    "UPDATE bodies SET refs = refs - ? WHERE id = ?",
                    [(n, body) for body, n in released.items()],
                )
                marks = ",".join("?" * len(released))
                conn.execute(
                    f"DELETE FROM bodies WHERE id IN ({marks}) AND refs <= 0", list(released)
                )
        return states

    async def retry(self, delivery_id: int, next_attempt_at: datetime, error: str) -> None:
        due_us = to_us(next_attempt_at)

        def work(conn: sqlite3.Connection) -> None:
            self._unlease(delivery_id)
            row = conn.execute(
                "UPDATE deliveries SET leased = 0, due_us = ?, attempts = attempts + 1,"
                " last_error = ? WHERE id = ? AND state = 0 RETURNING target",
                (due_us, error, delivery_id),
            ).fetchone()
            if row is not None:
                self._lower(row[0], due_us)

        await self._write(work)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        if not delivery_ids:
            return

        def work(conn: sqlite3.Connection) -> None:
            # A leased row kept its due time, so giving it back only forgets the lease.
            for delivery_id in delivery_ids:
                if delivery_id not in self._leases:
                    continue
                self._unlease(delivery_id)
                row = conn.execute(
                    "SELECT target, due_us FROM deliveries WHERE id = ? AND state = 0",
                    (delivery_id,),
                ).fetchone()
                if row is not None:
                    self._lower(row[0], row[1])

        await self._write(work, durable=False)

    async def dead_letter(self, delivery_id: int, error: str) -> None:
        dead_us = to_us(self._clock())

        def work(conn: sqlite3.Connection) -> None:
            self._unlease(delivery_id)
            row = conn.execute(
                "SELECT target, state, ordering_key FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            if row is None or row[1] == DEAD:
                return
            conn.execute(
                "UPDATE deliveries SET state = 2, leased = 0, attempts = attempts + 1,"
                " last_error = ?, dead_us = ? WHERE id = ?",
                (error, dead_us, delivery_id),
            )
            if row[1] == READY and row[2] is not None:
                self._promote(conn, row[0], row[2])

        await self._write(work)

    # -- dead letters --------------------------------------------------------------------------

    async def _dead_letters(
        self,
        tenant: str,
        bus: str,
        rule: str | None,
        target_id: str | None,
        after: int,
        limit: int,
    ) -> list[DeadLetter]:

        def query(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM targets AS t"
                " JOIN deliveries AS d ON d.target = t.target AND d.state = 2"
                " LEFT JOIN bodies AS b ON b.id = d.body"
                " WHERE t.tenant = :tenant AND t.bus = :bus"
                " AND (:rule IS NULL OR t.rule = :rule)"
                " AND (:target_id IS NULL OR t.target_id = :target_id)"
                " AND d.id > :after ORDER BY d.id LIMIT :limit",
                {"tenant": tenant, "bus": bus, "rule": rule, "target_id": target_id,
                 "after": after, "limit": limit},
            ).fetchall()  # fmt: skip
            return [
                DeadLetter(
                    id=r[0], tenant=tenant, bus=bus, rule=r[1], target_id=r[2], event_id=r[3],
                    event_source=r[4], position=r[5], recorded_time=from_us(r[6]),
                    dead_time=from_us(r[7]), attempts=r[8], last_error=r[9], payload=r[10],
                    content_type=r[11], ordering_key=r[12],
                )
                for r in rows
            ]  # fmt: skip

        return await self._read(query)

    async def redrive(self, tenant: str, bus: str, ids: Sequence[int] | None = None) -> int:
        now_us = to_us(self._clock())
        wanted = None if ids is None else set(ids)

        def work(conn: sqlite3.Connection) -> int:
            self._refresh(conn)
            rows = conn.execute(
                "SELECT d.id, d.target, d.ordering_key FROM targets AS t"
                " JOIN deliveries AS d ON d.target = t.target AND d.state = 2"
                " WHERE t.tenant = ? AND t.bus = ? ORDER BY d.id",
                (tenant, bus),
            ).fetchall()
            moved = 0
            for delivery_id, target, ordering_key in rows:
                if wanted is not None and delivery_id not in wanted:
                    continue
                state = READY
                if (
                    ordering_key is not None
                    and conn.execute(_GROUP_BUSY, (target, ordering_key)).fetchone()
                ):
                    state = WAITING
                conn.execute(
                    "UPDATE deliveries SET state = ?, due_us = ?, age_from_us = ?, leased = 0,"
                    " attempts = 0, dead_us = NULL WHERE id = ?",
                    (state, now_us, now_us, delivery_id),
                )
                if state == READY:
                    self._lower(target, now_us)
                moved += 1
            return moved

        return await self._write(work)

    async def depth(self) -> list[QueueDepth]:
        now_us = to_us(self._clock())

        def query(conn: sqlite3.Connection) -> list[QueueDepth]:
            rows = conn.execute(
                "SELECT d.target, t.tenant, t.bus, t.rule, t.target_id,"
                " sum(d.state < 2), sum(d.state = 2),"
                " min(CASE WHEN d.state < 2 THEN d.recorded_us END)"
                " FROM deliveries AS d JOIN targets AS t ON t.target = d.target"
                " GROUP BY d.target ORDER BY t.tenant, t.bus, t.rule, t.target_id"
            ).fetchall()
            with self._lease_lock:
                leased = Counter(t for t, until in self._leases.values() if until > now_us)
            out = []
            for target, tenant, bus, rule, target_id, unfinished, dead, oldest in rows:
                # The lease map and the file are read apart: keep the counts consistent.
                in_flight = min(leased[target], unfinished)
                out.append(
                    QueueDepth(
                        key=TargetKey(tenant, bus, rule, target_id),
                        pending=unfinished - in_flight,
                        in_flight=in_flight,
                        dead=dead,
                        oldest_pending_seconds=(
                            None if oldest is None else max(0, now_us - oldest) / 1_000_000
                        ),
                    )
                )
            return out

        return await self._read(query)

    # -- erasure -------------------------------------------------------------------------------

    async def erase(
        self,
        tenant: str,
        bus: str | None,
        positions: Collection[tuple[str, int]],
        needle: bytes,
        matches: PayloadMatch,
    ) -> ErasedDeliveries:
        """Find the deliveries on the reader a page at a time; remove each page's in the writer."""
        erased = set(positions)
        pending = dead = 0
        after = 0
        while True:
            page = await self._read(
                functools.partial(_erase_page, tenant=tenant, bus=bus, after=after)
            )
            if not page:
                return ErasedDeliveries(pending, dead)
            after = page[-1][0]
            ids = [
                delivery_id
                for delivery_id, on_bus, position, payload, content_type in page
                if (on_bus, position) in erased
                or (needle in payload and matches(payload, content_type))
            ]
            if ids:
                states = await self._write(functools.partial(self._erase_ids, ids=ids))
                dead += states[DEAD]
                pending += states.total() - states[DEAD]

    def _erase_ids(self, conn: sqlite3.Connection, ids: Sequence[int]) -> Counter[int]:
        (secure,) = conn.execute("PRAGMA secure_delete").fetchone()
        conn.execute("PRAGMA secure_delete = ON")  # erased payloads do not stay in free pages
        try:
            return self._remove(conn, ids)
        finally:
            conn.execute(f"PRAGMA secure_delete = {int(secure)}")

    # -- the writer thread's side --------------------------------------------------------------

    def _mark_stale(self) -> None:
        # A rolled-back operation may have cached target ids or due times that never committed.
        self._stale = True

    def _refresh(self, conn: sqlite3.Connection) -> None:
        if not self._stale:
            return
        self._target_ids.clear()
        self._keys.clear()
        for target, tenant, bus, rule, target_id in conn.execute(
            "SELECT target, tenant, bus, rule, target_id FROM targets"
        ):
            key = TargetKey(tenant, bus, rule, target_id)
            self._target_ids[key] = target
            self._keys[target] = key
        self._earliest = dict(
            conn.execute(
                "SELECT target, min(due_us) FROM deliveries WHERE state = 0 GROUP BY target"
            )
        )
        # Ids are never reused while the process runs (SQLite would reuse the highest after its
        # row is deleted): a worker still settling delivery 7 must not mistake a new delivery 7
        # for its own, and a lease is kept by id.
        top = conn.execute("SELECT max(id) FROM deliveries").fetchone()[0]
        self._last_id = max(self._last_id, top or 0)
        self._stale = False

    def _target(self, conn: sqlite3.Connection, key: TargetKey) -> int:
        target = self._target_ids.get(key)
        if target is None:
            target = conn.execute(
                "INSERT INTO targets (tenant, bus, rule, target_id) VALUES (?, ?, ?, ?)"
                " RETURNING target",
                key,
            ).fetchone()[0]
            self._target_ids[key] = target
            self._keys[target] = key
        return target

    def _lower(self, target: int, due_us: int) -> None:
        current = self._earliest.get(target)
        if current is None or due_us < current:
            self._earliest[target] = due_us

    def _promote(self, conn: sqlite3.Connection, target: int, ordering_key: str) -> None:
        """The head of an ordered group finished: the next delivery of the group is ready."""
        row = conn.execute(_NEXT_IN_GROUP, (target, ordering_key)).fetchone()
        if row is not None:
            conn.execute("UPDATE deliveries SET state = 0 WHERE id = ?", (row[0],))
            self._lower(target, row[1])

    async def _write(
        self,
        work: Callable[[sqlite3.Connection], _T],
        *,
        durable: bool = True,
        synced: bool = True,
    ) -> _T:
        writer = self._writer
        if writer is None:
            raise QueueClosed("the delivery queue is not open")
        operation = _Operation(work, asyncio.get_running_loop(), durable, synced)
        writer.submit(operation)
        result: _T = await operation.future
        return result

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        reader, conn = self._reader, self._read_conn
        if reader is None or conn is None:
            raise QueueClosed("the delivery queue is not open")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(reader, query, conn)
        except RuntimeError:  # shut down between the check and the call
            raise QueueClosed("the delivery queue is closing") from None
        return await future


def _erase_page(
    conn: sqlite3.Connection, tenant: str, bus: str | None, after: int
) -> list[tuple[int, str, int, bytes, str]]:
    """The next page of the tenant's deliveries: id, bus, position, payload, content type."""
    return conn.execute(
        "SELECT d.id, t.bus, d.position, coalesce(b.payload, d.payload), d.content_type"
        " FROM targets AS t JOIN deliveries AS d ON d.target = t.target"
        " LEFT JOIN bodies AS b ON b.id = d.body"
        " WHERE t.tenant = ? AND (? IS NULL OR t.bus = ?) AND d.id > ? ORDER BY d.id LIMIT ?",
        (tenant, bus, bus, after, _ERASE_PAGE),
    ).fetchall()


def _leased(key: TargetKey, row: Any) -> LeasedDelivery:
    (delivery_id, _, attempts, event_id, source, position, recorded_us, age_from_us,
     payload, content_type, ordering_key, last_error) = row  # fmt: skip
    return LeasedDelivery(
        id=delivery_id,
        tenant=key.tenant,
        bus=key.bus,
        rule=key.rule,
        target_id=key.target_id,
        event_id=event_id,
        event_source=source,
        position=position,
        recorded_time=from_us(recorded_us),
        payload=payload,
        content_type=content_type,
        attempts=attempts,
        ordering_key=ordering_key,
        last_error=last_error,
        age_from=None if age_from_us == recorded_us else from_us(age_from_us),
    )
