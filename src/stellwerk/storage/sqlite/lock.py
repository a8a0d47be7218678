"""One process at a time: `flock` on a file of the data directory, released by the kernel when
its holder dies, however it dies.

`run/log-writer.lock` is held by the process that appends to the event log, `run/pipeline.lock` by
the one that routes, archives, delivers and schedules. A second server started on the same data
directory waits for them (and says so, once), rather than routing and delivering everything a
second time (docs/operations.md, "Processes (embedded mode)").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

LOCK_POLL_SECONDS: Final = 0.2


class FileLock:
    """An exclusive lock on `path` (created if missing); the holder's pid is written into it,
    so that whoever waits can say for whom."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this holder has it now."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def acquire(self, *, waiting: Callable[[int | None], None] | None = None) -> None:
        """Take the lock, waiting as long as another process holds it; `waiting(pid)` is called
        once if it has to wait (pid: the holder's, when it can be read)."""
        told = False
        while not self.try_acquire():
            if not told and waiting is not None:
                waiting(self.holder())
            told = True
            await asyncio.sleep(LOCK_POLL_SECONDS)

    def holder(self) -> int | None:
        """The pid the last holder wrote, if any (it may have ended since)."""
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().strip())
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock
