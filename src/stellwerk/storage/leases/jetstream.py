"""Leases on JetStream (`stellwerk.seams.Leases`) in a KV-shaped stream with compare-and-set.

A keeper renews, releases and claims in rounds, spreading names over a role's live members by
rendezvous hashing, and judges time on our own monotonic clock only (docs/scale-out.md,
"Leases: one router per bus").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import msgspec
import structlog
from nats.aio.msg import Msg

from stellwerk.seams import DEFAULT_TTL, NameSource, rendezvous_winner, role_of
from stellwerk.storage.jetstream import (
    NO_RESPONDERS,
    STATUS,
    WRONG_LAST_SEQUENCE,
    Connection,
    JetStreamApiError,
    JetStreamUnavailable,
    Put,
    check_namespace,
    decode_ack,
    ensure_stream,
    publish_all,
    scan,
    table_config,
    token,
)

SCAN_BATCH: Final = 1000
log = structlog.stdlib.get_logger(__name__)


class LeaseRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """`lease.<name>`: its holder, or `""` once released. `name` is for people reading it."""

    name: str
    holder: str = ""


class MemberRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """`member.<role>.<holder>`: a heartbeat; `gone` when the holder closed."""

    holder: str
    role: str
    gone: bool = False


_encode: Final = msgspec.json.Encoder().encode
_decode_lease: Final = msgspec.json.Decoder(LeaseRecord).decode
_decode_member: Final = msgspec.json.Decoder(MemberRecord).decode


def default_holder() -> str:
    """Host, process and a random suffix: unique even for a process id that is reused."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class _Seen:
    """A key's last sequence as we read it, and when (our monotonic clock) we first saw it."""

    seq: int
    since: float


@dataclass(slots=True)
class _Held:
    seq: int  # our last write to the lease's key
    until: float  # monotonic: `holds` answers True before this


@dataclass(frozen=True, slots=True)
class _Write:
    name: str
    kind: str  # "claim", "renew", "release", "member"
    put: Put


class JetStreamLeases:
    """`Leases` in the stream `KV_<namespace>_leases` at `url` (servers comma-separated).

    `ttl` is how long a lease lasts unrenewed (15 s); rounds run every `ttl / 3`; `holds` turns
    False `margin` (ttl / 3) before a lease could expire for others; a name nobody claims for
    `grace` (ttl) after it became free may be taken by a member that is not its winner.
    `replicas` is the stream's replication (3 in a cluster).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "stellwerk",
        holder: str | None = None,
        ttl: float = DEFAULT_TTL,
        grace: float | None = None,
        margin: float | None = None,
        replicas: int = 1,
        request_timeout: float | None = None,
    ) -> None:
        check_namespace(namespace)
        self.url = url
        self.bucket = f"{namespace}_leases"
        self._holder = holder or default_holder()
        self._ttl = ttl
        self.grace = ttl if grace is None else grace
        self.margin = ttl / 3 if margin is None else margin
        self.interval = ttl / 3
        self.replicas = replicas
        # A round must end well within the margin for leases to stay held without a gap.
        self._timeout = request_timeout if request_timeout is not None else min(5.0, ttl / 3)
        self._conn: Connection | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._sources: dict[int, tuple[NameSource, set[str]]] = {}
        self._next_source = 0
        self._held: dict[str, _Held] = {}
        self._seen: dict[str, _Seen] = {}
        self._free_since: dict[str, float] = {}
        self._roles: set[str] = set()  # roles whose member record we keep
        self._woken = asyncio.Event()

    # -- the seam ------------------------------------------------------------------------------

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def ttl(self) -> float:
        return self._ttl

    def holds(self, name: str) -> bool:
        held = self._held.get(name)
        return held is not None and time.monotonic() < held.until

    def held(self) -> set[str]:
        """The names `holds` is True for now."""
        return {name for name in self._held if self.holds(name)}

    def want(self, source: NameSource) -> Callable[[], None]:
        key = self._next_source
        self._next_source += 1
        self._sources[key] = (source, set())

        def unwant() -> None:
            self._sources.pop(key, None)

        return unwant

    def wake(self) -> None:
        self._woken.set()

    async def start(self) -> None:
        if self._conn is not None:
            raise RuntimeError("the leases were already started")
        conn = Connection(self.url, request_timeout=self._timeout, name="stellwerk-leases")
        await conn.open()
        try:
            await self._ensure_stream(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._keeper = asyncio.create_task(self._keep(), name=f"leases-{self.holder}")

    async def close(self) -> None:
        """Release every lease and leave every role, so successors take over at once."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.wait([keeper])
        conn, self._conn = self._conn, None
        if conn is None:
            return
        held, self._held = self._held, {}
        writes = [self._release(name, h.seq) for name, h in held.items()]
        writes += [self._member(role, gone=True) for role in self._roles]
        try:
            await self._send(conn, writes)
        except (JetStreamUnavailable, JetStreamApiError) as exc:
            log.warning("leases not released on close; they expire", error=str(exc))
        finally:
            await conn.close()

    # -- names -----------------------------------------------------------------------------------

    def lease_key(self, name: str) -> str:
        return f"$KV.{self.bucket}.lease.{token(name)}"

    def member_key(self, role: str, holder: str) -> str:
        return f"$KV.{self.bucket}.member.{token(role)}.{token(holder)}"

    def _kind(self, subject: str) -> str:
        return subject[len(self.bucket) + 5 :].partition(".")[0]

    # -- the keeper ------------------------------------------------------------------------------

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            conn = self._conn
            if conn is not None:
                try:
                    await self._round(conn)
                except (JetStreamUnavailable, JetStreamApiError) as exc:
                    # What we hold lapses by itself (`holds` looks at the time); try again.
                    log.warning("lease round failed", holder=self.holder, error=str(exc))
                except Exception:
                    log.exception("lease round failed", holder=self.holder)
            # Until the next round is due, or a source wants other names (`wake`).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.interval - (loop.time() - began))):
                    await self._woken.wait()
            self._woken.clear()

    def _wanted(self) -> set[str]:
        wanted: set[str] = set()
        for key, (source, last) in list(self._sources.items()):
            try:
                names = set(source())
            except Exception:
                log.exception("lease source failed; keeping its last answer")
                names = last
            self._sources[key] = (source, names)
            wanted |= names
        return wanted

    async def _round(self, conn: Connection) -> None:
        wanted = self._wanted()
        roles = {role_of(name) for name in wanted}
        beats = [self._member(role) for role in roles]
        beats += [self._member(role, gone=True) for role in self._roles - roles]
        self._roles = roles
        records = await self._scan(conn)
        now = time.monotonic()
        self._observe(records, now)
        members = self._members(records, now, roles)

        writes = beats
        for name, held in list(self._held.items()):
            winner = rendezvous_winner(name, members.get(role_of(name), ()))
            if name in wanted and winner == self.holder:
                writes.append(self._lease(name, "renew", held.seq))
            else:
                # No longer ours to keep: stop answering `holds` before anyone may take it.
                del self._held[name]
                writes.append(self._release(name, held.seq))
        for name in wanted - self._held.keys():
            expected = self._claimable(name, records, now)
            if expected is None:
                self._free_since.pop(name, None)
                continue
            since = self._free_since.setdefault(name, now)
            winner = rendezvous_winner(name, members[role_of(name)])
            if winner == self.holder or now - since >= self.grace:
                writes.append(self._lease(name, "claim", expected))
        self._free_since = {n: t for n, t in self._free_since.items() if n in wanted}
        await self._send(conn, writes)

    def _observe(self, records: dict[str, tuple[int, bytes]], now: float) -> None:
        seen: dict[str, _Seen] = {}
        for subject, (seq, _) in records.items():
            before = self._seen.get(subject)
            seen[subject] = before if before is not None and before.seq == seq else _Seen(seq, now)
        self._seen = seen

    def _expired(self, subject: str, now: float) -> bool:
        seen = self._seen.get(subject)
        return seen is not None and now - seen.since >= self.ttl

    def _members(
        self, records: dict[str, tuple[int, bytes]], now: float, roles: Iterable[str]
    ) -> dict[str, set[str]]:
        """Per role, the live members: heartbeats seen changing within `ttl`, and ourselves."""
        members: dict[str, set[str]] = {role: {self.holder} for role in roles}
        for subject, (_, body) in records.items():
            if self._kind(subject) != "member" or self._expired(subject, now):
                continue
            try:
                record = _decode_member(body)
            except msgspec.DecodeError:
                continue
            if record.role in members and not record.gone:
                members[record.role].add(record.holder)
        return members

    def _claimable(
        self, name: str, records: dict[str, tuple[int, bytes]], now: float
    ) -> int | None:
        """The sequence a claim must expect if the lease is free, expired or left to us."""
        subject = self.lease_key(name)
        found = records.get(subject)
        if found is None:
            return 0  # no record: "no message on the subject yet" is sequence 0
        seq, body = found
        try:
            holder = _decode_lease(body).holder
        except msgspec.DecodeError:
            holder = ""
        if holder in ("", self.holder) or self._expired(subject, now):
            # Our own name on it: a renewal whose answer we missed; the compare-and-set decides.
            return seq
        return None

    # -- writes ----------------------------------------------------------------------------------

    def _lease(self, name: str, kind: str, expected: int) -> _Write:
        body = _encode(LeaseRecord(name, self.holder))
        return _Write(name, kind, self._put(self.lease_key(name), body, expected))

    def _release(self, name: str, expected: int) -> _Write:
        body = _encode(LeaseRecord(name))
        return _Write(name, "release", self._put(self.lease_key(name), body, expected))

    def _member(self, role: str, *, gone: bool = False) -> _Write:
        body = _encode(MemberRecord(self.holder, role, gone))
        return _Write(role, "member", self._put(self.member_key(role, self.holder), body))

    def _put(self, subject: str, body: bytes, expected: int | None = None) -> Put:
        # A record nobody renews goes by itself, long after it expired for everyone: members
        # of processes that died, leases of buses that were deleted.
        keep = timedelta(seconds=max(2, math.ceil(10 * self.ttl)))
        return Put(subject, body, expected, ttl=keep)

    async def _send(self, conn: Connection, writes: list[_Write]) -> None:
        """Publish all writes at once and take in what each one won or lost."""
        if not writes:
            return
        sent = time.monotonic()  # before the writes: nobody can have seen them before this
        futures = await publish_all(conn, [write.put for write in writes], self._timeout)
        for write, future in zip(writes, futures, strict=False):
            seq = _settled(future)
            if write.kind in ("claim", "renew") and seq is not None and seq > 0:
                if write.kind == "claim":
                    log.info("lease_gained", lease=write.name, holder=self.holder)
                self._held[write.name] = _Held(seq, sent + self.ttl - self.margin)
                self._free_since.pop(write.name, None)
            elif write.kind == "renew" and seq == 0:
                # Someone else took it (it expired in their eyes): `holds` is False already.
                log.warning("lease_lost", lease=write.name, holder=self.holder)
                self._held.pop(write.name, None)
            elif write.kind == "release" and seq is not None:
                log.info("lease_released", lease=write.name, holder=self.holder)
        for future in futures:
            future.cancel()

    async def _ensure_stream(self, conn: Connection) -> None:
        # Made as it always was: no duplicate window of ours, and a stream that exists already
        # is taken as it is (its replicas are not brought to ours).
        config = table_config(
            self.bucket, replicas=self.replicas, dedup_window=None, rollups=False, ttls=True
        )
        await ensure_stream(conn, config, adopt=False)

    async def _scan(self, conn: Connection) -> dict[str, tuple[int, bytes]]:
        """Every record in the stream, by subject: (sequence, body). Any replica may answer: a
        stale answer only delays a takeover, since every claim is a compare-and-set."""
        records: dict[str, tuple[int, bytes]] = {}
        async for page in scan(conn, f"KV_{self.bucket}", f"$KV.{self.bucket}.>", batch=SCAN_BATCH):
            records.update((stored.subject, (stored.seq, stored.data)) for stored in page)
        return records


def _settled(future: asyncio.Future[Msg]) -> int | None:
    """A write's outcome: its sequence, 0 when its compare-and-set failed, None if unknown."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    reply = future.result()
    if reply.headers and reply.headers.get(STATUS) == NO_RESPONDERS:
        return None
    ack = decode_ack(reply.data)
    if ack.error is not None:
        return 0 if ack.error.err_code == WRONG_LAST_SEQUENCE else None
    return ack.seq
