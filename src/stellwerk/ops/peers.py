"""One `/metrics` for the processes of an embedded data directory: the gateway fetches the
pipeline process's exposition over its abstract Unix socket at each scrape and merges it with its
own, each sample labelled with the `process` it came from.

Merged, the answer is always the classic Prometheus text format (which every scraper reads):
families are grouped by name across the processes, so a family is described once.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from stellwerk.ops.metrics import Metrics

__all__ = ["PeerMetrics", "merge_expositions"]

SCRAPE_TIMEOUT_SECONDS: Final = 2.0
MAX_EXPOSITION_BYTES: Final = 16 * 1024 * 1024
_COMMENT: Final = re.compile(r"# (HELP|TYPE) (\S+)(?: (.*))?")


@dataclass
class _Family:
    help: str | None = None
    type: str | None = None
    samples: list[str] = field(default_factory=list)


def _with_process(sample: str, process: str) -> str:
    label = f'process="{process}"'
    brace, space = sample.find("{"), sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = sample[brace + 1 :]
        return f"{sample[: brace + 1]}{label}{'' if rest.startswith('}') else ','}{rest}"
    return f"{sample[:space]}{{{label}}}{sample[space:]}"


def merge_expositions(parts: Sequence[tuple[str, str]]) -> str:
    """Expositions in the text format by process name, as one: every sample gets a `process`
    label; each family's description comes once, followed by the samples of every process."""
    families: dict[str, _Family] = {}
    for process, text in parts:
        current: str | None = None
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                comment = _COMMENT.fullmatch(line)
                if comment is None:
                    continue
                kind, name, value = comment.groups()
                family = families.setdefault(name, _Family())
                if kind == "HELP" and family.help is None:
                    family.help = value or ""
                elif kind == "TYPE" and family.type is None:
                    family.type = value or "untyped"
                current = name
                continue
            # A sample belongs to the family described last (prometheus_client always
            # describes one before its samples).
            name = current if current is not None else re.split(r"[{ ]", line, maxsplit=1)[0]
            families.setdefault(name, _Family()).samples.append(_with_process(line, process))
    out = []
    for name, family in families.items():
        if family.help is not None:
            out.append(f"# HELP {name} {family.help}")
        if family.type is not None:
            out.append(f"# TYPE {name} {family.type}")
        out.extend(family.samples)
    return "\n".join(out) + "\n"


class PeerMetrics:
    """This process's metrics (`own`, called `name`) merged with another's, fetched from the
    Unix socket `address()` names (None: no such process now)."""

    def __init__(self, metrics: Metrics, name: str, peer: str, address: Callable[[], str | None]):
        self._metrics = metrics
        self._name = name
        self._peer = peer
        self._address = address

    async def render(self, names: Collection[str] = ()) -> tuple[bytes, str]:
        """Both processes' exposition; only the samples `names` of each, when given."""
        registry = self._metrics.registry
        own = generate_latest(registry.restricted_registry(names) if names else registry).decode()
        parts = [(self._name, own)]
        peer = await self._fetch(names)
        if peer is not None:
            parts.append((self._peer, peer))
        ok = (
            "# HELP stellwerk_peer_scrape_ok Whether the last scrape of another process of the "
            "data directory (merged into this exposition) succeeded.\n"
            "# TYPE stellwerk_peer_scrape_ok gauge\n"
            f"stellwerk_peer_scrape_ok {1 if peer is not None else 0}\n"
        )
        parts.append((self._peer, ok))
        return merge_expositions(parts).encode(), CONTENT_TYPE_LATEST

    async def _fetch(self, names: Collection[str] = ()) -> str | None:
        address = self._address()
        if address is None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT_SECONDS):
                # Connected first: uvloop takes no abstract address in open_unix_connection.
                await asyncio.get_running_loop().sock_connect(sock, address)
                reader, writer = await asyncio.open_unix_connection(
                    sock=sock, limit=MAX_EXPOSITION_BYTES
                )
                try:
                    query = "?" + urlencode([("name[]", n) for n in names]) if names else ""
                    writer.write(
                        f"GET /metrics{query} HTTP/1.0\r\nHost: stellwerk\r\n\r\n".encode()
                    )
                    await writer.drain()
                    answer = await reader.read(MAX_EXPOSITION_BYTES)
                    while chunk := await reader.read(MAX_EXPOSITION_BYTES):
                        answer += chunk
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            sock.close()
            return None
        head, _, body = answer.partition(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            return None
        return body.decode(errors="replace")
