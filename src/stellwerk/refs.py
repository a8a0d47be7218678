"""A tenant's two keys as two types, and a bus as one value, so that mypy tells them apart.

The control plane keys a tenant by its id; the event log, the delivery queue, the archives, the
leases and the signals key it by its name (it is in their subjects, files and rows). Both are
strings on the wire and in the stores; in the code they are `TenantId` and `TenantName`, and
a function that wants one refuses the other. `TenantRef` is both, resolved once from an API key
(`Principal.ref`) or a control-plane row (`TenantRecord.ref`). `BusRef` is one tenant's bus as
the log side knows it: what every seam method about one bus takes, built once per request,
batch or bus (never per event). docs/architecture.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

import msgspec

TenantId = NewType("TenantId", str)
TenantName = NewType("TenantName", str)


@dataclass(frozen=True, slots=True)
class TenantRef:
    """A tenant resolved: its id (the control plane's key) and its name (the log side's key)."""

    id: TenantId
    name: TenantName

    def bus(self, name: str) -> BusRef:
        """One of the tenant's buses."""
        return BusRef(self.name, name)


class BusRef(msgspec.Struct, frozen=True, order=True):
    """A bus of a tenant, by the tenant's name: the key of the log side's per-bus state.

    A msgspec struct rather than a dataclass: ingest makes one per request and the followers
    key dicts by it, and it builds and hashes about four times as fast."""

    tenant: TenantName
    bus: str

    def __str__(self) -> str:
        return f"{self.tenant}/{self.bus}"
