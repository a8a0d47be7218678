"""Whether this site routes a bus now: the seam through which a site that stands by for
another (`stellwerk.sites`, global endpoints) keeps its router from delivering what the active
site delivers.

A standby's router does not route the bus; it moves its cursor over the events the active site
has routed already (`routed_elsewhere`) and stops at the first one it cannot say that of. Once
the site is active again it routes from there: an event routed on both sides of a switch is
delivered twice at most (at least once, the event id as the idempotency key), never lost.
Without a registered `Standby` every bus is routed here.
"""

from __future__ import annotations

from typing import Protocol

from stellwerk.refs import BusRef
from stellwerk.seams import StoredEvent


class Standby(Protocol):
    def standing_by(self, bus: BusRef) -> bool:
        """True while another site routes this bus (cheap: asked every batch)."""
        ...

    def routed_elsewhere(self, bus: BusRef, event: StoredEvent) -> bool:
        """True if the active site has routed `event` already (the standby moves past it)."""
        ...

    def knowledge(self, bus: BusRef) -> object:
        """What `routed_elsewhere` decides by for `bus` now, as a value to compare: while it is
        equal, an event refused is refused again, so the router does not read the bus again
        to ask (it waits at that event until what it knows of the active site moves)."""
        ...


class SiteRouting:
    """The process's answer to "does this site route the bus now"; one `Standby` may register."""

    def __init__(self) -> None:
        self.standby: Standby | None = None

    def register(self, standby: Standby) -> None:
        if self.standby is not None:
            raise RuntimeError("a standby is registered already")
        self.standby = standby

    def standing_by(self, bus: BusRef) -> Standby | None:
        """The standby if this site does not route `bus` now, else None."""
        standby = self.standby
        if standby is not None and standby.standing_by(bus):
            return standby
        return None
