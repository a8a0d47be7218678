"""A tenant's two keys as two types, so that mypy tells them apart.

The control plane keys a tenant by its id; the event log, the delivery queue, the archives, the
leases and the signals key it by its name (it is in their subjects, files and rows). Both are
strings on the wire and in the stores; in the code they are `TenantId` and `TenantName`, and
a function that wants one refuses the other. `TenantRef` is both, resolved once from an API key
(`Principal.ref`) or a control-plane row (`TenantRecord.ref`). docs/architecture.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

TenantId = NewType("TenantId", str)
TenantName = NewType("TenantName", str)


@dataclass(frozen=True, slots=True)
class TenantRef:
    """A tenant resolved: its id (the control plane's key) and its name (the log side's key)."""

    id: TenantId
    name: TenantName
