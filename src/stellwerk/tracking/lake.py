"""The `lake` rule target: matched events become rows of Parquet files, partitioned by tenant,
bus and date (hive style: `tenant=acme/bus=default/date=2026-12-04/part-....parquet`), in a
directory or an S3-compatible bucket that SQL reads without a warehouse.

A delivery is acknowledged once its row is durable in the spool (`lake_spool.py`); the
`LakeWriter` rolls each target's staged rows of a partition into one file when there are
`roll_rows` of them, `roll_bytes`, or the oldest has waited `roll_seconds`. A file is written
under a temporary name, flushed to disk and renamed into place, so a reader never sees half of
one, and the spool remembers which rows it holds, so a crash neither loses a row nor writes one
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import duckdb
import msgspec
import structlog

from stellwerk.auth import Principal
from stellwerk.capability import (
    Delivered,
    Delivery,
    InvalidRuleError,
    Outcome,
    RetryLater,
    Target,
    TargetSpec,
)
from stellwerk.refs import BusRef
from stellwerk.tracking.lake_metrics import LakeMetrics
from stellwerk.tracking.lake_spool import TOMBSTONE_SECONDS, Backlog, Claim, Spool, Staged

log = structlog.get_logger("stellwerk.tracking.lake")

TYPE: Final = "lake"
# At most one pruning of the spool's tombstones in this long: they are pruned in groups.
PRUNE_EVERY_SECONDS: Final = 600.0
# The shortest wait between two steps that found something due: a partition a step could not
# roll is not looked at again in a busy loop.
MIN_WAIT_SECONDS: Final = 0.05
# After a file failed (a full disk, a bucket out of reach), how long before it is tried again.
RETRY_SECONDS: Final = 5.0

# The columns of every lake file, in order (DuckDB types); tenant, bus and date come from the
# path. Times are UTC without a zone (TIMESTAMP): a TIMESTAMPTZ would need pytz to be read.
COLUMNS: Final = {
    "id": "VARCHAR",
    "source": "VARCHAR",
    "type": "VARCHAR",
    "subject": "VARCHAR",
    "time": "TIMESTAMP",
    "recordedtime": "TIMESTAMP",
    "position": "BIGINT",
    "rule": "VARCHAR",
    "event": "JSON",
}


class LakeParameters(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A lake target's settings: when a partition's file rolls (whichever comes first)."""

    roll_rows: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000
    roll_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 64 << 20
    roll_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=86_400.0)] = 300.0


DEFAULTS: Final = LakeParameters()


class _Row(msgspec.Struct, omit_defaults=False):
    id: str
    source: str
    type: str | None
    subject: str | None
    time: str | None
    recordedtime: str
    position: int
    rule: str
    event: msgspec.Raw


_ROW = msgspec.json.Encoder()


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat()


def _time_of(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _utc_text(parsed)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def row_of(delivery: Delivery) -> tuple[str, bytes]:
    """The partition and the NDJSON line of a delivery. The payload (the event, or what the
    input transformer made of it) is the `event` column; a payload that is not JSON is kept
    as a JSON string."""
    try:
        payload: Any = msgspec.json.decode(delivery.payload)
        event = msgspec.Raw(delivery.payload)
    except msgspec.DecodeError:
        payload = None
        event = msgspec.Raw(_ROW.encode(delivery.payload.decode("utf-8", "replace")))
    fields: dict[str, Any] = payload if isinstance(payload, dict) else {}
    row = _Row(
        id=delivery.event_id,
        source=delivery.event_source,
        type=_text(fields.get("type")),
        subject=_text(fields.get("subject")),
        time=_time_of(fields.get("time")),
        recordedtime=_utc_text(delivery.recorded_time),
        position=delivery.position,
        rule=delivery.rule,
        event=event,
    )
    date = delivery.recorded_time.astimezone(UTC).date().isoformat()
    partition = f"tenant={delivery.tenant}/bus={delivery.bus}/date={date}"
    return partition, _ROW.encode(row)


def target_key(delivery: Delivery) -> str:
    return f"{delivery.tenant}/{delivery.bus}/{delivery.rule}/{delivery.target_id}"


def is_remote(root: str) -> bool:
    return "://" in root


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(root: str, scratch: Path, claim: Claim) -> None:
    """Write a claim's rows as one Parquet file (blocking: run it in a thread). On a directory
    the file appears whole under its name, or not at all; on S3 an object does anyway."""
    scratch.mkdir(parents=True, exist_ok=True)
    lines = scratch / (claim.file + ".ndjson")
    lines.write_bytes(b"\n".join(claim.rows) + b"\n")
    columns = "{" + ", ".join(f"{_quoted(n)}: {_quoted(t)}" for n, t in COLUMNS.items()) + "}"
    select = (
        f"SELECT * FROM read_json({_quoted(str(lines))}, format = 'newline_delimited',"
        f" columns = {columns})"
    )
    try:
        with duckdb.connect(config={"threads": 1, "temp_directory": str(scratch)}) as db:
            if is_remote(root):
                final = f"{root.rstrip('/')}/{claim.partition}/{claim.file}"
                configure_s3(db)
                db.execute(f"COPY ({select}) TO {_quoted(final)} (FORMAT parquet)")
                return
            directory = Path(root) / claim.partition
            directory.mkdir(parents=True, exist_ok=True)
            temporary = directory / (claim.file + ".tmp")
            db.execute(
                f"COPY ({select}) TO {_quoted(str(temporary))} (FORMAT parquet, COMPRESSION zstd)"
            )
        _fsync(temporary)
        temporary.rename(directory / claim.file)
        _fsync(directory)
    finally:
        lines.unlink(missing_ok=True)


def file_exists(root: str, claim: Claim) -> bool:
    if is_remote(root):
        return False  # written again: the same rows under the same name replace the object
    return (Path(root) / claim.partition / claim.file).exists()


def httpfs_file() -> Path | None:
    """The httpfs extension that the `duckdb-extension-httpfs` package (the `lake` extra) ships
    for this DuckDB's version, or None without it. Loaded by its path, it needs no network and
    no `INSTALL` into the user's home (which a container may not have)."""
    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package in spec.submodule_search_locations:
        found = Path(package) / "extensions" / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
        if found.is_file():
            return found
    return None


def load_httpfs(db: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs: the packaged one of the `lake` extra when it matches this DuckDB, else one
    installed in DuckDB's extension directory (`INSTALL httpfs`). Never installs anything."""
    shipped = httpfs_file()
    db.execute(f"LOAD {_quoted(str(shipped))}" if shipped else "LOAD httpfs")


def configure_s3(db: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's httpfs, with a secret made from the usual AWS variables (an S3-compatible store
    names its endpoint in `AWS_ENDPOINT_URL`). A secret, not `SET s3_secret_access_key`: a
    tenant's query could read a setting back with `current_setting`, while DuckDB redacts
    secrets."""
    load_httpfs(db)
    options = {
        "KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID"),
        "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "SESSION_TOKEN": os.environ.get("AWS_SESSION_TOKEN"),
        "REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    }
    given = [f"{name} {_quoted(value)}" for name, value in options.items() if value]
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        given += [
            f"ENDPOINT {_quoted(host.rstrip('/'))}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if scheme == 'https' else 'false'}",
        ]
    db.execute(f"CREATE TEMPORARY SECRET lake (TYPE s3{''.join(', ' + g for g in given)})")


class LakeWriter:
    """Rolls staged rows into files, in the process that delivers (a duty of its role)."""

    def __init__(
        self,
        spool: Spool,
        root: str,
        scratch: Path,
        *,
        retry_seconds: float = RETRY_SECONDS,
        metrics: LakeMetrics | None = None,
    ) -> None:
        self.spool = spool
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.root = root
        self.scratch = scratch
        self._stopping = asyncio.Event()
        # Set by a stop and by rows staged that make something due (`_staged`): the writer
        # waits for it, or for the next time something falls due (`_next_wait`), never on a
        # tick.
        self._wake = asyncio.Event()
        spool.listen(self._staged)
        self._timed: set[tuple[str, str]] = set()  # the partitions whose time the wait knows
        self.rounds = 0  # steps taken by `run`: its wake-ups
        self.waits: float | None = None  # how long its last wait might last (None: no limit)
        self.parked = False  # waiting now
        self._failed: dict[str, float] = {}  # claims whose file failed: when to try again
        # Partitions with a failed claim: not claimed from again before then (monotonic).
        self._held: dict[tuple[str, str], float] = {}
        # Claims are made by this writer alone: the spool holds some it does not know of only
        # after a crash (at the start) or a step that failed midway; else no step reads them.
        self._look_for_claims = True
        self._parameters: dict[str, LakeParameters] = {}
        self._parameters_version = -1  # the spool's `targets_version` they were read at
        # When the spool's tombstones are pruned next (epoch seconds): once the oldest is
        # `TOMBSTONE_SECONDS` old, at most every `PRUNE_EVERY_SECONDS`. None: there is none;
        # NaN: not known yet (the first step reads it).
        self._prune_at: float | None = math.nan
        self._pruned = 0.0

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the step: rows staged during it wake the next wait
            self.rounds += 1
            try:
                await self.step()
                self.waits = self._next_wait()
            except Exception as exc:  # a full disk, a bucket out of reach: try again
                self._look_for_claims = True
                log.warning("lake_write_failed", error=f"{type(exc).__name__}: {exc}")
                self.waits = max(self.retry_seconds, MIN_WAIT_SECONDS)
            self.parked = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.waits):
                    await self._wake.wait()
            self.parked = False
        # On the way out, what is staged is written, so a stop leaves the lake complete.
        with contextlib.suppress(Exception):
            await self.step(everything=True)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _staged(self, partitions: set[tuple[str, str]]) -> None:
        """Rows were staged in `partitions`: wake the writer when one is due by its rows or
        bytes now, or is new to its wait (its `roll_seconds` count from its oldest row).
        Else the wait stands: waking for every group of rows staged cost 2-3 µs per row."""
        if self._wake.is_set():
            return
        if self._parameters_version != self.spool.targets_version:
            self._wake.set()  # settings not read yet
            return
        for key in partitions:
            if key not in self._timed:
                self._wake.set()
                return
            backlog = self.spool.waiting(*key)
            if backlog is None or self._held.get(key, 0.0) > time.monotonic():
                continue  # a failed file's partition: its retry time is in the wait
            parameters = self._parameters.get(key[0], DEFAULTS)
            if backlog.rows >= parameters.roll_rows or backlog.bytes >= parameters.roll_bytes:
                self._wake.set()
                return

    def _next_wait(self) -> float | None:
        """How long until something falls due that no staging announces: a partition's
        `roll_seconds`, a failed file's retry, the tombstones' pruning. None: nothing."""
        now, clock = time.time(), time.monotonic()
        waits: list[float] = [at - clock for at in self._failed.values()]
        self._timed = set()
        for backlog in self.spool.backlog():
            self._timed.add((backlog.target, backlog.partition))
            parameters = self._parameters.get(backlog.target, DEFAULTS)
            due = backlog.oldest_us / 1e6 + parameters.roll_seconds - now
            held = self._held.get((backlog.target, backlog.partition))
            waits.append(due if held is None else max(due, held - clock))
        if self._prune_at is not None:
            waits.append(0.0 if math.isnan(self._prune_at) else self._prune_at - now)
        if not waits:
            return None
        return max(min(waits), MIN_WAIT_SECONDS)

    async def step(self, *, everything: bool = False) -> int:
        """Finish claims a crash or a failure left, then roll every partition that is due (all
        of them with `everything`); how many files were written."""
        written = 0
        retry = any(at <= time.monotonic() for at in self._failed.values())
        if self._look_for_claims or retry or everything:
            # Only then: the writer wakes for every group of rows staged, and reading the
            # claims (failed files' rows with them) each time cost 200 µs per row staged.
            for claim in await self.spool.claimed():
                if self._failed.get(claim.file, 0.0) <= time.monotonic():
                    written += await self._finish(claim)
            self._look_for_claims = False
        backlogs = self.spool.backlog()
        if backlogs and self._parameters_version != self.spool.targets_version:
            version = self.spool.targets_version
            known = await self.spool.parameters()
            self._parameters = {t: _decode_parameters(p) for t, p in known.items()}
            self._parameters_version = version
        for backlog in backlogs:
            key = (backlog.target, backlog.partition)
            if not everything and self._held.get(key, 0.0) > time.monotonic():
                continue  # its last file failed: tried again at its time, not at every step
            parameters = self._parameters.get(backlog.target, DEFAULTS)
            while everything or _due(backlog, parameters):
                claim = await self.spool.claim(
                    backlog.target, backlog.partition, parameters.roll_rows, parameters.roll_bytes
                )
                if not claim.rows:
                    break
                if not await self._finish(claim):
                    break  # the claim stays; the next partition is not held up by this one
                written += 1
                left = self.spool.waiting(backlog.target, backlog.partition)
                if left is None:
                    break
                backlog = left
        if self.metrics is not None:
            self.metrics.waiting.set(sum(b.rows for b in self.spool.backlog()))
        await self._prune_if_due(written)
        return written

    async def _prune_if_due(self, written: int) -> None:
        now = time.time()
        if self._prune_at is not None and math.isnan(self._prune_at):
            self._prune_at = self._prune_time(await self.spool.oldest_tombstone())
        if written and self._prune_at is None:
            self._prune_at = self._prune_time(now)  # the first tombstones since the last pruning
        if self._prune_at is not None and self._prune_at <= now:
            self._pruned = now
            await self.spool.prune()
            self._prune_at = self._prune_time(await self.spool.oldest_tombstone())

    def _prune_time(self, oldest: float | None) -> float | None:
        if oldest is None:
            return None
        return max(oldest + TOMBSTONE_SECONDS, self._pruned + PRUNE_EVERY_SECONDS)

    async def _finish(self, claim: Claim) -> bool:
        """Write the claim's file (unless it is in place) and settle its rows; False when it
        failed: then it is tried again after `retry_seconds`, with one warning each time."""
        try:
            if not file_exists(self.root, claim):
                await asyncio.to_thread(write_file, self.root, self.scratch, claim)
        except (duckdb.Error, OSError) as exc:
            retry = time.monotonic() + self.retry_seconds
            self._failed[claim.file] = retry
            self._held[(claim.target, claim.partition)] = retry
            log.warning(
                "lake_write_failed",
                file=f"{claim.partition}/{claim.file}",
                rows=len(claim.rows),
                error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
            )
            if self.metrics is not None:
                self.metrics.file(claim.partition, written=False)
            return False
        self._failed.pop(claim.file, None)
        self._held.pop((claim.target, claim.partition), None)
        await self.spool.written(claim.file)
        if self.metrics is not None:
            self.metrics.file(claim.partition, written=True)
        return True


def _decode_parameters(saved: bytes | None) -> LakeParameters:
    if saved is None:
        return DEFAULTS
    try:
        return msgspec.json.decode(saved, type=LakeParameters)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return DEFAULTS


def _due(backlog: Backlog, parameters: LakeParameters) -> bool:
    waited = time.time() - backlog.oldest_us / 1e6
    return (
        backlog.rows >= parameters.roll_rows
        or backlog.bytes >= parameters.roll_bytes
        or waited >= parameters.roll_seconds
    )


class LakeTargetKind:
    """Registered as target type `lake`. `spool` is None in a process that does not deliver
    (a gateway checks rules only)."""

    def __init__(self, spool: Spool | None, metrics: LakeMetrics | None = None) -> None:
        self.spool = spool
        self.metrics = metrics

    async def check(self, principal: Principal, spec: TargetSpec, where: str) -> TargetSpec:
        field = f"{where}.parameters"
        try:
            msgspec.convert(spec.parameters or {}, LakeParameters)
        except msgspec.ValidationError as exc:
            message, marker, at = str(exc).rpartition(" - at `$")
            if marker:
                raise InvalidRuleError(message, field + at.rstrip("`")) from None
            raise InvalidRuleError(str(exc), field) from None
        return spec

    def build(self, owner: BusRef, spec: TargetSpec) -> Target:
        parameters = msgspec.convert(spec.parameters or {}, LakeParameters)
        return LakeTarget(self, owner, parameters)


class LakeTarget:
    """One rule's `lake` target: stages each delivery's row and acknowledges it once durable."""

    def __init__(self, kind: LakeTargetKind, owner: BusRef, parameters: LakeParameters) -> None:
        self._kind = kind
        self._owner = owner
        self._parameters = msgspec.json.encode(parameters)
        self._remembered: set[str] = set()

    async def deliver(self, delivery: Delivery) -> Outcome:
        spool = self._kind.spool
        if spool is None:
            return RetryLater("this process does not write to the lake")
        key = target_key(delivery)
        try:
            if key not in self._remembered:
                await spool.remember(key, self._parameters)
                self._remembered.add(key)
            partition, row = row_of(delivery)
            fresh = await spool.stage(
                Staged(key, partition, delivery.event_id, delivery.event_source, row)
            )
        except (sqlite3.Error, OSError) as exc:
            return RetryLater(f"the lake's spool: {type(exc).__name__}: {exc}")
        if self._kind.metrics is not None:
            self._kind.metrics.row(delivery.tenant, fresh)
        return Delivered("staged" if fresh else "in the lake already")

    async def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LakeTarget({self._owner})"
