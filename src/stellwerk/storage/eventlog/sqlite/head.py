"""The durable end of the log files, shared with every process that reads them.

After each group's fsync the writer stores where the files end (`file`, `end`) in a small file
that readers map into memory. Readers never look past it: bytes beyond it may still be lost in
a power failure, and an event read there could be routed although it was never stored. The head
is a hint for readers, not a record: opening the log finds the true end from the files.

The three words are written together with a check word; a reader that catches a write halfway
reads again.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Final

HEAD_FILE: Final = "head"
_WORDS: Final = struct.Struct("<QQQQ")  # file, end, generation, check
_SALT: Final = 0x5357_4C48_4541_4431


def _check(file: int, end: int, generation: int) -> int:
    return (file * 0x9E37_79B9_7F4A_7C15 ^ end ^ generation ^ _SALT) & 0xFFFF_FFFF_FFFF_FFFF


class Head:
    """A mapped head file. The writer calls `store`; anyone calls `load`."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if os.fstat(fd).st_size < _WORDS.size:
                if not create:
                    raise FileNotFoundError(f"{path} is not a log head yet")
                # Written, not just sized: a mapped page without a block behind it would be
                # allocated by the first store, and on a full disk that is a SIGBUS.
                os.pwrite(fd, bytes(_WORDS.size), 0)
            self._map = mmap.mmap(fd, _WORDS.size)
        finally:
            os.close(fd)
        self._generation = 0

    def store(self, file: int, end: int) -> None:
        self._generation += 1
        generation = self._generation
        _WORDS.pack_into(self._map, 0, file, end, generation, _check(file, end, generation))

    def load(self) -> tuple[int, int]:
        """`(file, end)`: the durable end as last stored; `(0, 0)` before the first store."""
        for _ in range(1000):
            file, end, generation, check = _WORDS.unpack_from(self._map, 0)
            if check == _check(file, end, generation):
                return file, end
            if not (file or end or generation or check):
                return 0, 0  # made, never stored yet
        raise RuntimeError("the log head keeps changing under the reader")

    def close(self) -> None:
        self._map.close()
