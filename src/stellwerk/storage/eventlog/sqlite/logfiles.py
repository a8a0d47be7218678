"""The log's files: chunks appended one after another, one fsync per commit group.

A directory of files named by a sequence number (`00000000000000000001.log`, ...). Only the
newest file is appended to; a file is closed once it passes `max_file_bytes` (at a group's end,
so a group's chunks are never split between files). Old files go whole when every chunk in them
has been trimmed.

Only the writer appends. Any thread or process may read with `pread` (chunks below the durable
end never change, but for an erasure's same-length overwrites) and erase in place.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from stellwerk.storage.eventlog.sqlite import chunks

SUFFIX: Final = ".log"
MAX_FILE_BYTES: Final = 256 * 1024 * 1024
_SCAN_READ: Final = 1 << 20
_MAX_BUFFERS: Final = min(1024, os.sysconf("SC_IOV_MAX"))  # per `pwritev`


def file_name(number: int) -> str:
    return f"{number:020d}{SUFFIX}"


class LogFiles:
    """The files of one log directory, for one process."""

    def __init__(self, directory: Path, *, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self._read_fds: dict[int, int] = {}
        self._lock = threading.Lock()
        # The writer's state.
        self._file = 0
        self._fd: int | None = None
        self._size = 0
        self._written = 0
        self._cut_pending = False

    # -- writing (the writer thread only) ------------------------------------------------------
    #
    # `_size` is the end of what a `sync` made durable, `_written` the end of what was written
    # after it. A write or sync that fails (a full or read-only disk, an I/O error) cuts the file
    # back to `_size`, so no torn or unacknowledged chunk stays in it; writes go to a known
    # offset (`pwritev`), never to wherever the descriptor was left. A cut that fails itself is
    # done before the next write, which fails if it still cannot be.

    def open_for_append(self, number: int, size: int) -> None:
        """Append to file `number` from `size` on (cutting off what lies beyond: a torn tail)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = self._open_file(number, size)
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._file, self._size, self._written = fd, number, size, size
        self._cut_pending = False

    @property
    def end(self) -> tuple[int, int]:
        """The file appended to, and the end of what was written: where the next chunk goes."""
        return self._file, self._written

    def append(self, data: Sequence[Sequence[bytes]]) -> list[tuple[int, int]]:
        """Write chunks, each given as the parts it is made of, after one another; return each
        one's `(file, offset)`. Not yet durable: `sync` makes it so. Rolls to a new file first
        if the current one is full."""
        if self._fd is None:
            raise RuntimeError("the log files are not open for appending")
        if self._cut_pending:
            self._cut()
        if self._written >= self.max_file_bytes:
            self._roll()
        places: list[tuple[int, int]] = []
        start = offset = self._written
        for parts in data:
            places.append((self._file, offset))
            offset += sum(map(len, parts))
        buffers = [part for parts in data for part in parts]
        if len(buffers) > _MAX_BUFFERS:  # more than one `pwritev` takes
            buffers = [b"".join(buffers)]
        try:
            written = os.pwritev(self._fd, buffers, start)
            while written < offset - start:  # a short write: the disk filled up, or a signal
                rest = b"".join(buffers)[written:]
                written += os.pwrite(self._fd, rest, start + written)
        except OSError:
            self._cut_quietly()
            raise
        self._written = offset
        return places

    def sync(self) -> None:
        """Make what was written durable; if that fails, cut it off again."""
        if self._fd is None:
            return
        try:
            os.fdatasync(self._fd)
        except OSError:
            self._cut_quietly()
            raise
        self._size = self._written

    def close_append(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Every acknowledged chunk was synced already; on a disk gone bad this only tries.
            try:
                with contextlib.suppress(OSError):
                    if self._cut_pending or self._written != self._size:
                        os.ftruncate(fd, self._size)
                    os.fdatasync(fd)
            finally:
                os.close(fd)

    def _cut(self) -> None:
        """Cut the file back to its durable end, durably."""
        assert self._fd is not None
        self._written = self._size
        self._cut_pending = True
        os.ftruncate(self._fd, self._size)
        os.fdatasync(self._fd)
        self._cut_pending = False

    def _cut_quietly(self) -> None:
        # The write's or sync's error is the one to report; a cut that fails now is done
        # before the next write (`_cut_pending`).
        with contextlib.suppress(OSError):
            self._cut()

    def _roll(self) -> None:
        """Go on in a new file. If it cannot be made, the current one stays the one appended to."""
        assert self._fd is not None
        os.fdatasync(self._fd)
        self._size = self._written
        self.open_for_append(self._file + 1, 0)

    def _open_file(self, number: int, size: int) -> int:
        fd = os.open(self.directory / file_name(number), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
                os.fdatasync(fd)
            _sync_directory(self.directory)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- reading and erasing (any thread) ------------------------------------------------------

    def read(self, number: int, offset: int, length: int) -> bytes:
        data = os.pread(self._read_fd(number), length, offset)
        if len(data) != length:
            raise chunks.ChunkError(
                f"{file_name(number)} ends before {offset + length} (wanted {length} bytes)"
            )
        return data

    def overwrite(self, number: int, pieces: list[tuple[int, bytes]]) -> None:
        """Write same-length pieces in place (an erasure), durably."""
        fd = os.open(self.directory / file_name(number), os.O_WRONLY)
        try:
            for offset, data in pieces:
                os.pwrite(fd, data, offset)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def numbers(self) -> list[int]:
        """The files there are, oldest first."""
        found = []
        for entry in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append(int(entry.stem))
        return sorted(found)

    def size(self, number: int) -> int:
        return os.stat(self.directory / file_name(number)).st_size

    def delete(self, number: int) -> None:
        with self._lock:
            fd = self._read_fds.pop(number, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / file_name(number))

    def scan(self, number: int, offset: int) -> Iterator[tuple[int, chunks.Header, bytes]]:
        """The intact chunks of a file from `offset` on, each with its offset: stops at the
        first one that is cut short or does not check out (a tail the writer never finished)."""
        fd = self._read_fd(number)
        while True:
            head_bytes = os.pread(fd, chunks.HEADER.size, offset)
            try:
                head = chunks.read_header(head_bytes)
            except chunks.ChunkError:
                return
            raw = os.pread(fd, head.size, offset)
            try:
                chunks.decode(raw, check=True)
            except chunks.ChunkError:
                return
            yield offset, head, raw
            offset += head.size

    def close(self) -> None:
        self.close_append()
        with self._lock:
            fds, self._read_fds = list(self._read_fds.values()), {}
        for fd in fds:
            os.close(fd)

    def _read_fd(self, number: int) -> int:
        fd = self._read_fds.get(number)
        if fd is None:
            with self._lock:
                fd = self._read_fds.get(number)
                if fd is None:
                    fd = os.open(self.directory / file_name(number), os.O_RDONLY)
                    self._read_fds[number] = fd
        return fd


def _sync_directory(directory: Path) -> None:
    """Make a new file's name durable: a crash must not lose the file the chunks went to."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
