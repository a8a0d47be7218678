"""A tiny writer of MaxMind DB (`.mmdb`) files, so that the geo tests and the enrichment bench
build their databases themselves instead of shipping a binary one.

It writes what `maxminddb` reads (MaxMind DB format 2.0): an IPv6 search tree with 32-bit
records (IPv4 networks live under ``::/96``, as in MaxMind's own databases), the data section,
and the metadata map. It handles non-overlapping networks only, which is all a test needs.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
# Data section type numbers (the spec's "Output Data Types"); 8 and up are "extended".
UTF8, DOUBLE, MAP, UINT16, UINT32, UINT64, ARRAY, BOOLEAN = 2, 3, 7, 5, 6, 9, 11, 14


def _control(kind: int, size: int) -> bytes:
    """The control byte(s) of a field: 3 bits of type, 5 bits of size, then the extended type
    byte and the size's extra bytes, in that order."""
    if size < 29:
        marker, extra = size, b""
    elif size < 29 + 256:
        marker, extra = 29, bytes([size - 29])
    elif size < 285 + 65_536:
        marker, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        marker, extra = 31, (size - 65_821).to_bytes(3, "big")
    if kind < 8:
        return bytes([kind << 5 | marker]) + extra
    return bytes([marker, kind - 7]) + extra


@dataclass(frozen=True)
class Unsigned:
    """An integer of a given width: libmaxminddb checks the metadata's types exactly
    (`node_count` a uint32, `build_epoch` a uint64), where `encode` picks the narrowest."""

    value: int
    kind: int


def encode(value: Any) -> bytes:
    """One value in the data section's encoding."""
    if isinstance(value, Unsigned):
        raw = value.value.to_bytes((value.value.bit_length() + 7) // 8, "big")
        return _control(value.kind, len(raw)) + raw
    if isinstance(value, bool):
        return _control(BOOLEAN, int(value))
    if isinstance(value, str):
        raw = value.encode()
        return _control(UTF8, len(raw)) + raw
    if isinstance(value, float):
        return _control(DOUBLE, 8) + struct.pack(">d", value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("this writer has no signed integers")
        kind = UINT16 if value < 1 << 16 else UINT32 if value < 1 << 32 else UINT64
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return _control(kind, len(raw)) + raw
    if isinstance(value, Mapping):
        body = b"".join(encode(str(k)) + encode(v) for k, v in value.items())
        return _control(MAP, len(value)) + body
    if isinstance(value, Sequence):
        return _control(ARRAY, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def write_mmdb(
    path: Path,
    networks: Mapping[str, Mapping[str, Any]],
    *,
    database_type: str = "Stellwerk-Test-City",
) -> Path:
    """Write `networks` (CIDR -> record) to `path` as a MaxMind DB and return the path."""
    data = bytearray()
    # A node is [left, right]; a record is ("node", index), ("data", offset) or None (no data).
    nodes: list[list[tuple[str, int] | None]] = [[None, None]]
    for cidr, record in networks.items():
        network = ipaddress.ip_network(cidr)
        if network.version == 4:
            bits, length = int(network.network_address), 96 + network.prefixlen
        else:
            bits, length = int(network.network_address), network.prefixlen
        offset = len(data)
        data += encode(record)
        node = 0
        for depth in range(length):
            bit = (bits >> (127 - depth)) & 1 if network.version == 6 else _v4_bit(bits, depth)
            if depth == length - 1:
                if nodes[node][bit] is not None:
                    raise ValueError(f"{cidr} overlaps another network")
                nodes[node][bit] = ("data", offset)
                break
            slot = nodes[node][bit]
            if slot is None:
                nodes.append([None, None])
                slot = ("node", len(nodes) - 1)
                nodes[node][bit] = slot
            elif slot[0] == "data":
                raise ValueError(f"{cidr} lies inside another network")
            node = slot[1]
    count = len(nodes)

    def record_value(slot: tuple[str, int] | None) -> int:
        if slot is None:
            return count
        kind, number = slot
        return number if kind == "node" else count + 16 + number

    tree = b"".join(
        struct.pack(">II", record_value(left), record_value(right)) for left, right in nodes
    )
    metadata = {
        "binary_format_major_version": Unsigned(2, UINT16),
        "binary_format_minor_version": Unsigned(0, UINT16),
        "build_epoch": Unsigned(int(time.time()), UINT64),
        "database_type": database_type,
        "description": {"en": "built by the Stellwerk tests"},
        "ip_version": Unsigned(6, UINT16),
        "languages": ["en"],
        "node_count": Unsigned(count, UINT32),
        "record_size": Unsigned(32, UINT16),
    }
    path.write_bytes(tree + bytes(16) + bytes(data) + METADATA_MARKER + encode(metadata))
    return path


def _v4_bit(address: int, depth: int) -> int:
    """Bit `depth` of an IPv4 address seen as ``::a.b.c.d``: 96 zero bits, then its own 32."""
    return 0 if depth < 96 else (address >> (127 - depth)) & 1


LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")


def city_record(
    country: str, city: str, *, region: str = "", latitude: float = 0.0, longitude: float = 0.0
) -> dict[str, Any]:
    """A record shaped like one of GeoLite2-City's (names in its eight languages, continent,
    registered country, postal code): as costly to decode as a real one."""
    names = dict.fromkeys(LANGUAGES, city)
    country_names = dict.fromkeys(LANGUAGES, f"{country}-land")
    record: dict[str, Any] = {
        "city": {"geoname_id": 2_950_159, "names": names},
        "continent": {"code": "EU", "geoname_id": 6_255_148, "names": country_names},
        "country": {"geoname_id": 2_921_044, "iso_code": country, "names": country_names},
        "location": {
            "accuracy_radius": 20,
            "latitude": latitude,
            "longitude": longitude,
            "time_zone": "Europe/Berlin",
        },
        "postal": {"code": "10115"},
        "registered_country": {
            "geoname_id": 2_921_044,
            "iso_code": country,
            "names": country_names,
        },
    }
    if region:
        record["subdivisions"] = [
            {"geoname_id": 2_950_157, "iso_code": region, "names": country_names}
        ]
    return record
