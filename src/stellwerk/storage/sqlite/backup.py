"""Consistent copies of a live embedded data directory, and restoring them.

Files holding cursors are copied before what the cursors point into, the control plane last,
so a restored cursor never points past the restored log (docs/operations.md). pipeline.db goes
first: its router and archiver cursors point into the log (events recorded meanwhile are routed
or archived again, none is skipped), its replay cursors into the archives of the same snapshot.
deliveries.db and archives.db, in a data directory not started since pipeline.db came, go with
it; the first start after a restore moves them in. The event log is a directory: its SQLite
index is copied first, then its append-only files, each up to its size when the copy began;
opening the restored log indexes what the files hold beyond the index, cuts off a chunk the copy
caught halfway, and forgets chunks of files a trim deleted meanwhile.

A capability that keeps files of its own in the data directory (the tracking capability's lake
and its spool) adds a `BackupPart`: it is copied after everything of the core, since what it
holds was acknowledged to the core's delivery queue (a row the copy of the queue still shows
pending comes again and is recognised), and it says itself which entries it wrote.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from stellwerk import __version__
from stellwerk.clock import utc_now
from stellwerk.secrets import KEY_FILE
from stellwerk.storage.sqlite.files import (
    ARCHIVES_FILE,
    CONTROL_FILE,
    DELIVERIES_FILE,
    LEGACY_EVENTS_FILE,
    LOG_DIR,
    PIPELINE_FILE,
)

MANIFEST: Final = "backup.json"
# Order matters: see the module docstring.
DATABASES: Final = (
    PIPELINE_FILE,
    DELIVERIES_FILE,
    ARCHIVES_FILE,
    LEGACY_EVENTS_FILE,
    LOG_DIR,
    CONTROL_FILE,
)
# What a live SQLite database has beside its file, and the log writer's shared head: none of it
# belongs in a copy.
_NOT_COPIED: Final = ("-wal", "-shm", "-journal")
_HEAD: Final = "head"
PRIVATE_FILES: Final = (KEY_FILE, "bootstrap.json")


class BackupError(Exception):
    """The backup or restore cannot be made; the message says why."""


class Manifest(msgspec.Struct):
    """`parts`: the entries (directories of the data directory) that capabilities' parts
    wrote; a backup of an earlier version has none."""

    version: str
    created_at: datetime
    databases: list[str]
    files: list[str]
    parts: list[str] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BackupPart:
    """What a capability adds to a backup: `copy(data_dir, destination)` copies what it keeps
    in the data directory, consistently while the server runs, into the backup's folder, and
    returns the names of the top-level entries it wrote there (directories, restored whole;
    every `*.db` in them is checked as an SQLite database)."""

    name: str
    copy: Callable[[Path, Path], list[str]]


@dataclass(frozen=True, slots=True)
class BackupResult:
    destination: Path
    manifest: Manifest


def _empty_or_absent(path: Path, role: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{role} {path} must be an empty directory or not exist")


def _copy(source: Path, target: Path) -> None:
    """A database file, or a directory of one database and append-only files (the log)."""
    if not source.is_dir():
        copy_database(source, target)
        return
    target.mkdir()
    entries = sorted(source.iterdir(), key=lambda p: (p.suffix != ".db", p.name))
    sizes = {p: p.stat().st_size for p in entries if p.suffix != ".db"}
    for entry in entries:
        if entry.name == _HEAD or entry.name.endswith(_NOT_COPIED) or not entry.is_file():
            continue
        if entry.suffix == ".db":
            copy_database(entry, target / entry.name)
            continue
        try:
            with entry.open("rb") as src, (target / entry.name).open("wb") as dst:
                shutil.copyfileobj(_Limited(src, sizes[entry]), dst)
        except FileNotFoundError:
            continue  # trimmed meanwhile: the restored log forgets its chunks


class _Limited:
    """A file read up to a size: what it held when the copy began."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw = raw
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._raw.read(n)
        self._left -= len(data)
        return data


def _check(path: Path) -> None:
    if path.is_dir():
        for entry in path.glob("*.db"):
            _check_database(entry)
    else:
        _check_database(path)


def _check_tree(path: Path) -> None:
    """Every SQLite database in a part's directory (named `*.db`) passes its integrity check."""
    for entry in sorted(path.rglob("*.db")):
        _check_database(entry)


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API), in WAL mode."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()


def _check_database(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if result != "ok":
        raise BackupError(f"{path.name} is damaged: {result}")


def _copy_private(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(0o600)


def backup(data_dir: Path, destination: Path, parts: Sequence[BackupPart] = ()) -> BackupResult:
    """Copy a (possibly running) embedded data directory to `destination`, with what
    capabilities' `parts` keep in it after the core's databases."""
    if not (data_dir / LOG_DIR).exists() and not (data_dir / LEGACY_EVENTS_FILE).exists():
        raise BackupError(f"{data_dir} holds no Stellwerk data (no event log: {LOG_DIR}/)")
    _empty_or_absent(destination, "the backup destination")
    destination.mkdir(parents=True, exist_ok=True)
    databases = []
    for name in DATABASES:
        if (data_dir / name).exists():
            _copy(data_dir / name, destination / name)
            _check(destination / name)
            databases.append(name)
    written: list[str] = []
    for part in parts:
        for entry in part.copy(data_dir, destination):
            if (destination / entry).is_dir():
                _check_tree(destination / entry)
            written.append(entry)
    files = []
    for name in PRIVATE_FILES:
        if (data_dir / name).exists():
            _copy_private(data_dir / name, destination / name)
            files.append(name)
    manifest = Manifest(__version__, utc_now(), databases, files, written)
    (destination / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    return BackupResult(destination, manifest)


def verify(source: Path) -> Manifest:
    """Check a backup without restoring it: its manifest, every database it lists (`PRAGMA
    integrity_check`) and every file it lists. Raises `BackupError` saying what is wrong."""
    try:
        manifest = msgspec.json.decode((source / MANIFEST).read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise BackupError(f"{source} is not a Stellwerk backup ({MANIFEST} is missing)") from None
    except msgspec.DecodeError as exc:
        raise BackupError(f"{source / MANIFEST} is not readable: {exc}") from None
    if LOG_DIR not in manifest.databases and LEGACY_EVENTS_FILE not in manifest.databases:
        raise BackupError(f"{source} holds no event log ({LOG_DIR}/ is not listed)")
    for name in manifest.databases:
        if not (source / name).exists():
            raise BackupError(f"the backup lists {name}, which is missing")
        try:
            _check(source / name)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{name} is damaged: {exc}") from None
    for name in manifest.files:
        if not (source / name).is_file():
            raise BackupError(f"the backup lists {name}, which is missing")
    for name in manifest.parts:
        if not (source / name).exists():
            raise BackupError(f"the backup lists {name}, which is missing")
        try:
            _check_tree(source / name)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{name} holds a damaged database: {exc}") from None
    return manifest


def restore(source: Path, data_dir: Path) -> Manifest:
    """Restore a backup into an empty (or new) data directory."""
    manifest = verify(source)
    _empty_or_absent(data_dir, "the data directory to restore into")
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest.databases:
        _copy(source / name, data_dir / name)
    for name in manifest.files:
        _copy_private(source / name, data_dir / name)
    for name in manifest.parts:
        if (source / name).is_dir():
            shutil.copytree(source / name, data_dir / name)
        else:
            shutil.copy2(source / name, data_dir / name)
    return manifest
