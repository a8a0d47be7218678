"""What a failed write says about the data directory: full, read-only, or failing.

The answer goes to clients (a 503 that names it, with `Retry-After`) and to the operator's log.
It is read from the error number where there is one; SQLite often says only "disk I/O error",
so then the file system's own flags and free space decide.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

FULL: Final = "DataDirectoryFull"
READ_ONLY: Final = "DataDirectoryReadOnly"
FAILING: Final = "DataDirectoryFailing"
CODES: Final = (FULL, READ_ONLY, FAILING)  # what the API answers with a 503

PROBE_FILE: Final = ".probe"
_PROBE_BYTES: Final = 4096
# Below this much free space a write that failed without saying why failed for want of room.
_NEARLY_FULL_BYTES: Final = 1024 * 1024

_SQLITE_READONLY: Final = 8
_SQLITE_IOERR: Final = 10
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14

_MESSAGES: Final = {
    FULL: "the data directory is full",
    READ_ONLY: "the data directory is read-only",
    FAILING: "the data directory's disk fails (I/O error)",
}


@dataclass(frozen=True)
class DiskTrouble:
    """Why writes to the data directory fail: `code` for machines, `message` for clients (no
    path in it), `detail` (the error itself) for the operator's log."""

    code: str
    message: str
    detail: str


def diagnose(exc: BaseException, directory: Path) -> DiskTrouble | None:
    """The trouble `exc` shows in `directory`, or None if it is no trouble of the disk's."""
    detail = f"{type(exc).__name__}: {exc}"
    code: str | None = None
    message: str | None = None
    if isinstance(exc, OSError):
        code = _by_errno(exc.errno)
        if exc.errno in (errno.EACCES, errno.EPERM):
            message = "the data directory cannot be written (permission denied)"
        elif exc.errno == errno.EIO:
            code = _by_file_system(directory) or FAILING
    elif isinstance(exc, sqlite3.Error):
        primary = getattr(exc, "sqlite_errorcode", -1) & 0xFF
        if primary == _SQLITE_FULL:
            code = FULL
        elif primary == _SQLITE_READONLY:
            code = _by_file_system(directory) or READ_ONLY
        elif primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
            code = _by_file_system(directory) or FAILING
    if code is None:
        return None
    return DiskTrouble(code, message or _MESSAGES[code], detail)


def probe(directory: Path) -> DiskTrouble | None:
    """Write, sync and remove a small file in `directory`: the trouble that shows, if any (a
    full disk that has room again, say, shows none)."""
    failure = _write_probe(directory)
    if failure is None:
        return None
    return diagnose(failure, directory) or DiskTrouble(
        FAILING, _MESSAGES[FAILING], f"{type(failure).__name__}: {failure}"
    )


def _write_probe(directory: Path) -> OSError | None:
    path = directory / PROBE_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(_PROBE_BYTES))
            os.fdatasync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
    except OSError as exc:
        return exc
    return None


def _by_errno(number: int | None) -> str | None:
    if number in (errno.ENOSPC, errno.EDQUOT):
        return FULL
    if number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return READ_ONLY
    if number == errno.EIO:
        return FAILING
    return None


def _by_file_system(directory: Path) -> str | None:
    """What the file system says when SQLite said only "I/O error": its read-only flag, the
    error a small write of our own gets (an ext4 that turned read-only after an error keeps
    its flag clear), its free space; None if all is well there."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return READ_ONLY
    failure = _write_probe(directory)
    if failure is not None and (code := _by_errno(failure.errno)) not in (None, FAILING):
        return code
    free = (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize
    if free < _NEARLY_FULL_BYTES:
        return FULL
    return None
