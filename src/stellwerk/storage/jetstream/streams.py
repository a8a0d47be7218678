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


LEADER_WAIT_SECONDS: Final = 10.0


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


async def ensure_stream(conn: Connection, config: dict[str, Any], *, adopt: bool = True) -> None:
    """Create the stream; if it exists already (`STREAM_NAME_IN_USE`) and `adopt`, bring its
    replicas and duplicate window to ours where they differ: it was made by a process with
    other settings, and ours are the ones this process promises. Its other settings are left
    as they are. Without `adopt` (the leases' table) an existing stream is taken as it is."""
    name = config["name"]
    try:
        await conn.api(f"$JS.API.STREAM.CREATE.{name}", config)
    except JetStreamApiError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
        if not adopt:
            return
        current = (await conn.api(f"$JS.API.STREAM.INFO.{name}"))["config"]
        changed = {k: config[k] for k in _SHARED_SETTINGS}
        if any(current.get(k) != v for k, v in changed.items()):
            await conn.api(f"$JS.API.STREAM.UPDATE.{name}", {**current, **changed})
    if int(config.get("num_replicas", 1)) > 1:
        await _leader_elected(conn, name)


async def _leader_elected(conn: Connection, name: str) -> None:
    """Wait (bounded) until a replicated stream has a leader: a new R3 stream answers its first
    writes with "no responders" until its replicas have elected one, and a store that says it
    started should take writes. Past the bound the store starts anyway; writes then fail as
    unavailable and are retried, as after any leader loss."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEADER_WAIT_SECONDS
    while loop.time() < deadline:
        info = await conn.api(f"$JS.API.STREAM.INFO.{name}")
        if (info.get("cluster") or {}).get("leader"):
            return
        await asyncio.sleep(0.05)
