"""Making Stellwerk's JetStream streams, a *log* or a KV-shaped *table*, once per process.

Every JetStream failure leaves here as it came; each store turns it into its own error type with
`failures_as`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Final

import structlog

from stellwerk.storage.jetstream.connection import (
    Connection,
    JetStreamApiError,
    JetStreamUnavailable,
)

STREAM_NAME_IN_USE: Final = 10058
NO_MESSAGE: Final = 10037
WRONG_LAST_SEQUENCE: Final = 10071
# The settings every process of one namespace must agree on: an existing stream is brought to
# ours, since the process that made it may have had others (the last one to start wins).
_SHARED_SETTINGS: Final = ("num_replicas", "duplicate_window")


NO_SUITABLE_PEERS: Final = 10005
# How long making a stream waits for the cluster: a meta leader, the placement of its replicas,
# and its own leader. A cluster that has just started (or lost its meta leader) needs seconds.
STREAM_WAIT_SECONDS: Final = 20.0
LEADER_WAIT_SECONDS: Final = 10.0
# How long a placement is retried with every replica before fewer are taken: a cluster that has
# just started learns of its peers within a second or two; a peer that stays unknown is down.
PLACEMENT_PATIENCE_SECONDS: Final = 3.0
_FIRST_PAUSE: Final = 0.1
_LONGEST_PAUSE: Final = 2.0
_RESTORE_FIRST_PAUSE: Final = 1.0
_RESTORE_LONGEST_PAUSE: Final = 10.0
log = structlog.stdlib.get_logger(__name__)


@contextlib.contextmanager
def failures_as(error: type[Exception]) -> Iterator[None]:
    """Raise JetStream's failures inside as `error` (the cause kept): each store promises its
    callers one error type for "JetStream did not answer, or refused; try later"."""
    try:
        yield
    except (JetStreamUnavailable, JetStreamApiError) as exc:
        raise error(str(exc)) from exc


def window_ns(window: timedelta) -> int:
    """A duplicate window as JetStream takes it: whole nanoseconds."""
    return window // timedelta(microseconds=1) * 1000


def log_config(
    name: str, subjects: list[str], *, replicas: int, dedup_window: timedelta, **extra: object
) -> dict[str, Any]:
    """A stream that keeps what is written until Stellwerk removes it; `extra` settings (a
    store's own, such as `allow_msg_ttl`) are added as given."""
    return {
        "name": name,
        "subjects": subjects,
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "duplicate_window": window_ns(dedup_window),
        "allow_direct": True,
        **extra,
    }


def table_config(
    bucket: str, *, replicas: int, dedup_window: timedelta | None, rollups: bool, ttls: bool
) -> dict[str, Any]:
    """A KV-shaped stream: one message per key, and a write to a full key refused, not a
    neighbour dropped. `dedup_window` None leaves JetStream's default; `rollups` allows
    `Nats-Rollup` headers, `ttls` per-message `Nats-TTL` (records that go by themselves)."""
    config: dict[str, Any] = {
        "name": f"KV_{bucket}",
        "subjects": [f"$KV.{bucket}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "new",
        "max_msgs_per_subject": 1,
        "num_replicas": replicas,
    }
    if dedup_window is not None:
        config["duplicate_window"] = window_ns(dedup_window)
    config["allow_direct"] = True
    if rollups:
        config["allow_rollup_hdrs"] = True
    if ttls:
        config["allow_msg_ttl"] = True
    return config


async def ensure_stream(
    conn: Connection,
    config: dict[str, Any],
    *,
    adopt: bool = True,
    within: float = STREAM_WAIT_SECONDS,
) -> None:
    """Create the stream, or take the one that exists, and return once it answers.

    If it exists already (`STREAM_NAME_IN_USE`) and `adopt`, its replicas and duplicate window
    are brought to ours where they differ: it was made by a process with other settings, and
    ours are the ones this process promises. Its other settings are left as they are. Without
    `adopt` (the leases' table) an existing stream is taken as it is.

    A cluster that cannot place the stream now (no meta leader yet, a peer not yet known or
    down) is waited for with backoff for up to `within` seconds. A placement that keeps
    failing with every replica takes fewer, down to a majority of them, and a task of the
    connection brings the stream to its replicas once the cluster can place them: a cluster
    with a node down still gets its new streams (docs/scale-out.md, "A cluster that is not
    whole, and NATS away").
    """
    name = config["name"]
    wanted = int(config.get("num_replicas", 1))
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + within
    replicas = wanted
    pause = _FIRST_PAUSE
    waiting_logged = False
    while True:
        try:
            placed = await _create_or_adopt(conn, config, replicas, adopt)
            break
        except (JetStreamApiError, JetStreamUnavailable) as exc:
            if not _passing(exc):
                raise
            now = loop.time()
            if (
                _unplaceable(exc)
                and replicas > _fewest(wanted)
                and now - began >= PLACEMENT_PATIENCE_SECONDS
            ):
                replicas -= 1
                continue
            if now + pause > deadline:
                raise
            if not waiting_logged:
                log.warning("stream_waiting_for_cluster", stream=name, error=str(exc))
                waiting_logged = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
    if placed < wanted and (adopt or replicas < wanted):
        log.warning(
            "stream_replicas_degraded",
            stream=name,
            replicas=placed,
            wanted=wanted,
            reason="the cluster cannot place every replica now; retried in the background",
        )
        conn.spawn(_restore_replicas(conn, name, wanted), name=f"replicas-{name}")
    await _answering(conn, config, deadline)


async def _create_or_adopt(
    conn: Connection, config: dict[str, Any], replicas: int, adopt: bool
) -> int:
    """Create the stream from `config` with `replicas`, or adopt the one there (brought to
    `config`, never to fewer replicas than it wants): the replicas it has now."""
    name = config["name"]
    try:
        created = await conn.api(
            f"$JS.API.STREAM.CREATE.{name}", {**config, "num_replicas": replicas}
        )
        return _replicas_of(created)
    except JetStreamApiError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
    current = (await conn.api(f"$JS.API.STREAM.INFO.{name}"))["config"]
    if not adopt:
        return int(current.get("num_replicas", 1))
    changed = {k: config[k] for k in _SHARED_SETTINGS if current.get(k) != config[k]}
    if not changed:
        return int(current.get("num_replicas", 1))
    try:
        updated = await conn.api(f"$JS.API.STREAM.UPDATE.{name}", {**current, **changed})
    except JetStreamApiError as exc:
        if not _unplaceable(exc):
            raise
        # More replicas than the cluster can place now: the rest of ours, and the replicas
        # later (the caller's restore).
        changed.pop("num_replicas", None)
        if not changed:
            return int(current.get("num_replicas", 1))
        updated = await conn.api(f"$JS.API.STREAM.UPDATE.{name}", {**current, **changed})
    return _replicas_of(updated)


def _replicas_of(answer: dict[str, Any]) -> int:
    return int((answer.get("config") or {}).get("num_replicas", 1))


def _passing(exc: Exception) -> bool:
    """A failure that the cluster's state explains and time may mend: no answer, no meta
    leader, no stream leader, or no peers to place on."""
    if isinstance(exc, JetStreamUnavailable):
        return True
    return isinstance(exc, JetStreamApiError) and (exc.code == 503 or _unplaceable(exc))


def _unplaceable(exc: Exception) -> bool:
    return isinstance(exc, JetStreamApiError) and exc.err_code == NO_SUITABLE_PEERS


def _fewest(wanted: int) -> int:
    """The fewest replicas a stream is made with when the cluster cannot place them all: a
    majority of them, so that a degraded R3 stream still keeps two copies."""
    return wanted // 2 + 1


async def _restore_replicas(conn: Connection, name: str, wanted: int) -> None:
    """Bring a stream made with fewer replicas to `wanted` once the cluster can place them."""
    pause = _RESTORE_FIRST_PAUSE
    while True:
        await asyncio.sleep(pause)
        pause = min(pause * 2, _RESTORE_LONGEST_PAUSE)
        try:
            current = (await conn.api(f"$JS.API.STREAM.INFO.{name}"))["config"]
            if int(current.get("num_replicas", 1)) >= wanted:
                log.info("stream_replicas_restored", stream=name, replicas=wanted, by="another")
                return
            await conn.api(f"$JS.API.STREAM.UPDATE.{name}", {**current, "num_replicas": wanted})
        except (JetStreamApiError, JetStreamUnavailable) as exc:
            if _passing(exc):
                continue
            log.warning("stream_replicas_not_restored", stream=name, error=str(exc))
            return
        log.info("stream_replicas_restored", stream=name, replicas=wanted)
        return


async def _answering(conn: Connection, config: dict[str, Any], deadline: float) -> None:
    """Wait (bounded) until the stream answers: a replicated stream has a leader, and where
    Direct Get is allowed, a read finds a responder. A new R3 stream answers its first writes
    and reads with "no responders" until its replicas have elected a leader, and a store that
    says it started should take them. Past the deadline the store starts anyway; its requests
    then fail as unavailable and are retried, as after any leader loss."""
    name = config["name"]
    replicated = int(config.get("num_replicas", 1)) > 1
    direct = bool(config.get("allow_direct"))
    loop = asyncio.get_running_loop()
    deadline = max(deadline, loop.time() + LEADER_WAIT_SECONDS)
    while True:
        try:
            led = True
            if replicated:
                info = await conn.api(f"$JS.API.STREAM.INFO.{name}")
                led = bool((info.get("cluster") or {}).get("leader"))
            if led and direct:
                await conn.direct_batch(name, {"seq": 1, "batch": 1})
            if led:
                return
        except (JetStreamApiError, JetStreamUnavailable) as exc:
            if not _passing(exc):
                raise
        if loop.time() >= deadline:
            log.warning("stream_not_answering", stream=name)
            return
        await asyncio.sleep(0.05)
