"""The bytes of a chunk: one commit group's events of one bus, as they lie in a log file.

A chunk is a fixed header and a payload:

    header   magic "SWL1", payload length (u32), CRC-32 of the payload (u32), event count (u32),
             first position (i64), recorded time in µs since the epoch (i64); little-endian
    payload  tenant and bus (u16 length + UTF-8 each), the attributes of each event as one
             MessagePack array of `[id, source, type, subject]` (u32 length first), the end
             offset of each body (count x u32), then the bodies one after another

Positions within a chunk are dense: event `i` is at `position + i`. A body is the event's JSON
with Stellwerk's extensions set. An erased event keeps its place: its body and its attributes'
text are overwritten with spaces of the same length, so every offset stays valid and a reader
tells it by the body's first byte (a stored body always starts with `{`).
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from typing import Final, NamedTuple

import msgspec

from stellwerk.refs import TenantName

MAGIC: Final = b"SWL1"
HEADER: Final = struct.Struct("<4sIIIqq")
_LENGTH: Final = struct.Struct("<H")
_META_LENGTH: Final = struct.Struct("<I")
BLANK: Final = 0x20  # the first byte of an erased body

Attributes = tuple[str, str, str, str | None]  # id, source, type, subject
_encode_meta: Final = msgspec.msgpack.Encoder().encode
_decode_meta: Final = msgspec.msgpack.Decoder(list[Attributes]).decode


class ChunkError(Exception):
    """The bytes are not a whole, intact chunk (a torn write at the end of a file, say)."""


class Header(NamedTuple):
    length: int  # of the payload
    crc: int
    events: int
    position: int
    recorded_us: int

    @property
    def size(self) -> int:
        """The whole chunk's size in the file."""
        return HEADER.size + self.length


class Chunk(NamedTuple):
    """A decoded chunk; `ends[i]` is where body `i` ends within `bodies`."""

    tenant: TenantName
    bus: str
    position: int
    recorded_us: int
    attributes: list[Attributes]
    ends: array[int]
    bodies: memoryview

    def body(self, index: int) -> bytes:
        start = self.ends[index - 1] if index else 0
        return bytes(self.bodies[start : self.ends[index]])

    def erased(self, index: int) -> bool:
        start = self.ends[index - 1] if index else 0
        return self.bodies[start] == BLANK


def encode(
    tenant: TenantName,
    bus: str,
    position: int,
    recorded_us: int,
    attributes: Sequence[Attributes],
    bodies: Sequence[bytes],
    suffix: bytes = b"",
) -> bytes:
    """One chunk's bytes, header included (`encode_parts` joined)."""
    return b"".join(encode_parts(tenant, bus, position, recorded_us, attributes, bodies, suffix))


def encode_parts(
    tenant: TenantName,
    bus: str,
    position: int,
    recorded_us: int,
    attributes: Sequence[Attributes],
    bodies: Sequence[bytes],
    suffix: bytes = b"",
) -> tuple[bytes, bytes]:
    """One chunk's bytes in two parts, the header and all but the bodies, then the bodies: the
    writer hands both to `pwritev` as they are, so the bodies are copied once (joined), not
    twice more into a payload and behind its header. With `suffix`, each body is followed by
    it (the writer's bodies are the events' JSON up to the last `}`, the suffix Stellwerk's
    extensions): joined once here rather than copied into a new body per event."""
    owner = _text(tenant) + _text(bus)
    meta = _encode_meta(attributes)
    if suffix:
        lengths = map(add, map(len, bodies), repeat(len(suffix)))
        ends = _pack_ends(array("I", accumulate(lengths)))
        # Joined with an empty last part: the suffix after the last body without a second copy
        # of the whole (`+ suffix`).
        joined = suffix.join([*bodies, b""]) if bodies else b""
    else:
        ends = _pack_ends(array("I", accumulate(map(len, bodies))))
        joined = b"".join(bodies)
    front = b"".join((owner, _META_LENGTH.pack(len(meta)), meta, ends))
    crc = zlib.crc32(joined, zlib.crc32(front))
    length = len(front) + len(joined)
    head = HEADER.pack(MAGIC, length, crc, len(bodies), position, recorded_us)
    return head + front, joined


def read_header(raw: bytes | memoryview, offset: int = 0) -> Header:
    """The header at `offset`; `ChunkError` if there is none (too short, no magic)."""
    if len(raw) - offset < HEADER.size:
        raise ChunkError("too short for a chunk header")
    magic, length, crc, count, position, recorded_us = HEADER.unpack_from(raw, offset)
    if magic != MAGIC:
        raise ChunkError("no chunk starts here")
    if count < 1 or length < 4 + _META_LENGTH.size + 4 * count:
        raise ChunkError("the chunk header is not one the writer makes")
    return Header(length, crc, count, position, recorded_us)


def decode(raw: bytes | memoryview, *, check: bool = False) -> Chunk:
    """A whole chunk, header included; `check` verifies the CRC (for bytes not known durable)."""
    view = memoryview(raw)
    head = read_header(view)
    payload = view[HEADER.size : head.size]
    if len(payload) != head.length:
        raise ChunkError("the chunk is cut short")
    if check and zlib.crc32(payload) != head.crc:
        raise ChunkError("the chunk's checksum does not match")
    try:
        return _decode_payload(head, payload)
    except (struct.error, msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ChunkError(f"the chunk does not decode: {exc}") from exc


def _decode_payload(head: Header, payload: memoryview) -> Chunk:
    tenant, at = _read_text(payload, 0)
    bus, at = _read_text(payload, at)
    (meta_length,) = _META_LENGTH.unpack_from(payload, at)
    at += _META_LENGTH.size
    attributes = _decode_meta(payload[at : at + meta_length])
    at += meta_length
    ends = _unpack_ends(payload[at : at + 4 * head.events])
    at += 4 * head.events
    return Chunk(
        TenantName(tenant), bus, head.position, head.recorded_us, attributes, ends, payload[at:]
    )


def owner(raw: bytes | memoryview) -> tuple[TenantName, str]:
    """The tenant and bus of a chunk, from its first bytes only."""
    view = memoryview(raw)[HEADER.size :]
    tenant, at = _read_text(view, 0)
    bus, _ = _read_text(view, at)
    return TenantName(tenant), bus


def blanked(raw: bytes | memoryview, indexes: Sequence[int]) -> list[tuple[int, bytes]]:
    """What erasing events `indexes` of a chunk writes, as `(offset in the chunk, bytes)` pieces
    of the same length as what they replace: the attributes block with the erased events' text
    blanked, then each erased body blanked. The CRC stays as it was: it guards only bytes that
    are not indexed yet, and erasures touch indexed chunks only."""
    chunk = decode(raw)
    erased = set(indexes)
    attributes = [
        (_spaces(i), _spaces(s), _spaces(t), None if subj is None else _spaces(subj))
        if index in erased
        else (i, s, t, subj)
        for index, (i, s, t, subj) in enumerate(chunk.attributes)
    ]
    meta = _encode_meta(attributes)
    meta_at = HEADER.size + 2 * _LENGTH.size + len(_utf8(chunk.tenant)) + len(_utf8(chunk.bus))
    meta_at += _META_LENGTH.size
    (old_length,) = _META_LENGTH.unpack_from(raw, meta_at - _META_LENGTH.size)
    if len(meta) != old_length:  # cannot happen: every blanked text keeps its byte count
        raise ChunkError("blanked attributes changed length")
    bodies_at = meta_at + old_length + 4 * len(chunk.ends)
    pieces = [(meta_at, meta)]
    for index in sorted(erased):
        start = chunk.ends[index - 1] if index else 0
        pieces.append((bodies_at + start, b" " * (chunk.ends[index] - start)))
    return pieces


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _spaces(text: str) -> str:
    return " " * len(text.encode("utf-8", "surrogatepass"))


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _LENGTH.pack(len(raw)) + raw


def _read_text(view: memoryview, at: int) -> tuple[str, int]:
    (length,) = _LENGTH.unpack_from(view, at)
    at += _LENGTH.size
    return str(view[at : at + length], "utf-8"), at + length


def _pack_ends(ends: array[int]) -> bytes:
    if ends.itemsize != 4:
        raise RuntimeError("this platform's array('I') is not 32 bits wide")
    if sys.byteorder != "little":
        ends.byteswap()
    return ends.tobytes()


def _unpack_ends(raw: bytes | memoryview) -> array[int]:
    ends = array("I")
    ends.frombytes(raw)
    if sys.byteorder != "little":
        ends.byteswap()
    return ends
