#!/usr/bin/env python3
"""Back up and restore a scaled-out Stellwerk: JetStream stream snapshots and PostgreSQL.

    python deploy/backup/scale_out_backup.py backup DEST --nats-url URL --database-url URL
    python deploy/backup/scale_out_backup.py restore SRC --nats-url URL --database-url URL

Runs with the Python that runs Stellwerk (it needs nats-py, the `nats` extra) and PostgreSQL's
`pg_dump`/`pg_restore`. The order is docs/operations.md's: what holds cursors is copied before
what the cursors point into, the control plane last: (1) the delivery queue and the cursors
(every stream of the namespace but the log, the archives and the leases), (2) the archives,
(3) the event log (a stream per tenant), (4) PostgreSQL. Each stream is a snapshot the server
takes while it keeps taking writes (JetStream's snapshot API, as `nats stream backup` uses it);
leases are not copied (they are renewed by whoever runs). Restore goes into an empty cluster
and an empty database, then the processes are started.

The flags also read STELLWERK_NATS_URL, STELLWERK_DATABASE_URL and STELLWERK_NATS_NAMESPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

CHUNK = 128 * 1024
MANIFEST = "manifest.json"
DUMP = "control.dump"
API = "$JS.API"
REQUEST_SECONDS = 10.0


class BackupFailed(Exception):
    """The backup or restore cannot go on; the message says why."""


async def api(nc: Client, subject: str, body: dict[str, Any]) -> Any:
    reply = await nc.request(f"{API}.{subject}", json.dumps(body).encode(), timeout=REQUEST_SECONDS)
    answer = json.loads(reply.data)
    if "error" in answer:
        raise BackupFailed(f"{subject}: {answer['error'].get('description', answer['error'])}")
    return answer


async def stream_names(nc: Client) -> list[str]:
    names: list[str] = []
    while True:
        page = await api(nc, "STREAM.NAMES", {"offset": len(names)})
        names.extend(page.get("streams") or [])
        if not page.get("streams") or len(names) >= page["total"]:
            return names


def in_order(names: Sequence[str], namespace: str) -> list[str]:
    """The namespace's streams in the order they are copied (leases left out)."""
    events = sorted(n for n in names if n.startswith(f"{namespace}_events_"))
    archives = [n for n in names if n == f"{namespace}_archived"]
    leases = f"KV_{namespace}_leases"
    ours = [n for n in names if n.startswith((f"{namespace}_", f"KV_{namespace}_"))]
    cursors = sorted(n for n in ours if n not in events and n not in archives and n != leases)
    return [*cursors, *archives, *events]


async def snapshot(nc: Client, stream: str, target: Path) -> dict[str, Any]:
    inbox = nc.new_inbox()
    chunks = await nc.subscribe(inbox)
    try:
        started = await api(
            nc,
            f"STREAM.SNAPSHOT.{stream}",
            {"deliver_subject": inbox, "no_consumers": True, "chunk_size": CHUNK},
        )
        with target.open("wb") as out:
            while True:
                message = await chunks.next_msg(timeout=60)
                status = (message.headers or {}).get("Status")
                if status and status != "100":
                    description = (message.headers or {}).get("Description", "")
                    raise BackupFailed(f"snapshot of {stream}: {status} {description}")
                if not message.data:
                    break  # the end
                out.write(message.data)
                if message.reply:
                    await nc.publish(message.reply, b"")  # flow control: the next chunks
    finally:
        await chunks.unsubscribe()
    return {"config": started["config"], "state": started["state"]}


async def restore_stream(
    nc: Client, meta: dict[str, Any], source: Path, replicas: int | None
) -> None:
    config = dict(meta["config"])
    if replicas is not None:
        config["num_replicas"] = replicas
    name = config["name"]
    started = await api(nc, f"STREAM.RESTORE.{name}", {"config": config, "state": meta["state"]})
    with source.open("rb") as data:
        while chunk := data.read(CHUNK):
            await nc.request(started["deliver_subject"], chunk, timeout=30)
    done = await nc.request(started["deliver_subject"], b"", timeout=120)
    answer = json.loads(done.data)
    if "error" in answer:
        raise BackupFailed(f"restore of {name}: {answer['error'].get('description')}")


def libpq_url(database_url: str) -> str:
    """Stellwerk's URL (`postgresql+asyncpg://`, `postgres://`) as pg_dump takes it."""
    scheme, _, rest = database_url.partition("://")
    if not scheme.startswith("postgres"):
        raise BackupFailed("--database-url must be a PostgreSQL URL")
    return f"postgresql://{rest}"


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupFailed(f"{command[0]} failed: {done.stderr.strip()[-500:]}")


def prepare(dest: Path) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise BackupFailed(f"{dest} must be an empty directory or not exist")
    (dest / "streams").mkdir(parents=True, exist_ok=True)


async def backup(dest: Path, nats_url: str, database_url: str, namespace: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url.split(","), connect_timeout=5, max_reconnect_attempts=3)
    streams = []
    try:
        for name in in_order(await stream_names(nc), namespace):
            meta = await snapshot(nc, name, dest / "streams" / f"{name}.tar.s2")
            (dest / "streams" / f"{name}.json").write_text(json.dumps(meta, indent=2))
            streams.append({"name": name, "messages": meta["state"].get("messages", 0)})
    finally:
        await nc.close()
    run(["pg_dump", "--format=custom", "--file", str(dest / DUMP), libpq_url(database_url)])
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "namespace": namespace,
        "streams": streams,
        "database": DUMP,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


async def restore(
    source: Path, nats_url: str, database_url: str, replicas: int | None
) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupFailed(f"{source} is not a scale-out backup ({MANIFEST} is missing)") from None
    nc = await nats.connect(nats_url.split(","), connect_timeout=5, max_reconnect_attempts=3)
    try:
        present = set(await stream_names(nc))
        wanted = [s["name"] for s in manifest["streams"]]
        if clash := present & set(wanted):
            raise BackupFailed(f"the cluster has these streams already: {sorted(clash)}")
        # The reverse of the backup's order: the log first, what points into it after.
        for name in reversed(wanted):
            meta = json.loads((source / "streams" / f"{name}.json").read_text())
            await restore_stream(nc, meta, source / "streams" / f"{name}.tar.s2", replicas)
    finally:
        await nc.close()
    run(
        [
            "pg_restore",
            "--no-owner",
            "--exit-on-error",
            "--dbname",
            libpq_url(database_url),
            str(source / manifest["database"]),
        ]
    )
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("backup", "restore"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--nats-url", default=os.environ.get("STELLWERK_NATS_URL"))
    parser.add_argument("--database-url", default=os.environ.get("STELLWERK_DATABASE_URL"))
    parser.add_argument(
        "--nats-namespace", default=os.environ.get("STELLWERK_NATS_NAMESPACE", "stellwerk")
    )
    parser.add_argument("--replicas", type=int, help="restore: replicas of every stream")
    args = parser.parse_args(argv)
    if not args.nats_url or not args.database_url:
        parser.error("--nats-url and --database-url (or their STELLWERK_ variables) are needed")
    try:
        if args.action == "backup":
            prepare(args.folder)
            done = asyncio.run(
                backup(args.folder, args.nats_url, args.database_url, args.nats_namespace)
            )
        else:
            done = asyncio.run(
                restore(args.folder, args.nats_url, args.database_url, args.replicas)
            )
    except (BackupFailed, OSError, TimeoutError, nats.errors.Error) as exc:
        print(f"scale_out_backup: error: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(f"{s['name']} ({s['messages']})" for s in done["streams"])
    print(f"{args.action}: {args.folder}: streams {names}; database {done['database']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
