"""Where a tenant's events live in JetStream: stream names, subjects and message ids.

A name becomes one subject token that is also safe in a stream (and directory) name
(docs/scale-out.md, "Stream layout").
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from stellwerk.refs import TenantName

_KEPT: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_NAMESPACE: Final = re.compile(r"[A-Za-z0-9-]{1,32}")


@functools.lru_cache(maxsize=16384)
def token(name: str) -> str:
    """`name` as one subject token that is also safe in a stream (and directory) name."""
    if not name.isascii():
        raise ValueError(f"name {name!r} is not ASCII")
    return "".join(c if c in _KEPT else f"_{ord(c):02X}" for c in name)


def name_of(token_text: str) -> str:
    """The name a `token` was made of."""
    return re.sub(r"_([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), token_text)


def check_namespace(namespace: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} must match {_NAMESPACE.pattern}")
    return namespace


@dataclass(frozen=True)
class Layout:
    """The names of one Stellwerk installation's event streams (its `namespace`)."""

    namespace: str = "stellwerk"

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    def stream(self, tenant: TenantName) -> str:
        return f"{self.namespace}_events_{token(tenant)}"

    def events_subject(self, tenant: TenantName, bus: str) -> str:
        return f"{self.namespace}.events.{token(tenant)}.{token(bus)}"

    def all_events(self, tenant: TenantName) -> str:
        """The wildcard that matches every bus's events of a tenant."""
        return f"{self.namespace}.events.{token(tenant)}.*"

    def marks_subject(self, tenant: TenantName, bus: str) -> str:
        return f"{self.namespace}.marks.{token(tenant)}.{token(bus)}"

    def all_marks(self, tenant: TenantName) -> str:
        return f"{self.namespace}.marks.{token(tenant)}.*"

    @property
    def every_tenant(self) -> str:
        """The wildcard that matches every event subject of the installation."""
        return f"{self.namespace}.events.>"

    def events_of_stream(self, stream: str) -> str:
        """The wildcard of every bus's events in one of our streams (named by `stream()`)."""
        tenant_token = stream.removeprefix(f"{self.namespace}_events_")
        return f"{self.namespace}.events.{tenant_token}.*"

    def marks_subject_of(self, events_subject: str) -> str:
        """The marks subject of the bus whose events go to `events_subject`."""
        _, _, tenant_token, bus_token = events_subject.split(".")
        return f"{self.namespace}.marks.{tenant_token}.{bus_token}"


def bus_of(events_subject: str) -> str:
    """The bus whose events go to `events_subject`."""
    return name_of(events_subject.rsplit(".", 1)[1])


def message_id(bus: str, source: str, event_id: str) -> str:
    """The `Nats-Msg-Id` of an event: a digest of its dedup key within the tenant's stream.

    128 bits of BLAKE2b in 22 characters: short, because JetStream keeps every id of the
    duplicate window in memory; the length prefixes keep `(a.b, c)` and `(a, b.c)` apart.
    """
    key = f"{len(bus)}:{bus}{len(source)}:{source}{event_id}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
