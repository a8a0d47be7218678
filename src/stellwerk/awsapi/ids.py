"""Random UUIDs (version 4) made in bulk: one `os.urandom` call and one formatting loop for
the event ids of many PutEvents calls, handed out as calls need them; and request ids, unique
in the process."""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from typing import Final

# Byte maps that set a UUID's version nibble (4) and its variant's two high bits (10).
_VERSION: Final = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT: Final = bytes((b & 0x3F) | 0x80 for b in range(256))


# Ids made at once. Made per call, ten ids cost the event loop 15 µs of CPU in a running server
# (its caches cold from the threads and processes beside it) against 5.5 in a loop of calls:
# made in a batch, the formatting runs warm (docs/eventbridge-api.md, "awsapi6").
_BATCH: Final = 256
_made: list[str] = []
_taking = threading.Lock()


def new_ids(count: int) -> list[str]:
    """`count` random UUIDs in their canonical text form (lower-case hex): 122 random bits
    each, from a batch made beforehand; each is handed out once."""
    with _taking:
        if len(_made) < count:
            _made.extend(_random_ids(max(count, _BATCH)))
        taken = _made[-count:]
        del _made[-count:]
    return taken


def _forked() -> None:
    """In a child forked from this process: not the ids its parent holds in its batch, and a
    lock no thread of the parent may hold."""
    global _taking
    _made.clear()
    _taking = threading.Lock()


os.register_at_fork(after_in_child=_forked)


def _random_ids(count: int) -> list[str]:
    """`count` random UUIDs, the version and variant bits set on all of them at once."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


# A request id (`x-amzn-RequestId`) need only tell one answer from another: the process's own
# random UUID with its last 48 bits counting, instead of 16 random bytes per call.
_PROCESS: Final = str(uuid.uuid4())[:24]
_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def request_ids() -> str:
    """The next request id, in a UUID's form: unique in this process, and across processes as
    random UUIDs are."""
    return f"{_PROCESS}{next(_counter) & 0xFFFFFFFFFFFF:012x}"
