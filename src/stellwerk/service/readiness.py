"""Whether the stores a process needs answer: what `/readyz` asks."""

from __future__ import annotations

from stellwerk.seams import EventLog, LogUnavailable
from stellwerk.service.errors import log_refused
from stellwerk.storage.control import ControlPlane


class Readiness:
    def __init__(self, control: ControlPlane, event_log: EventLog) -> None:
        self._control = control
        self._log = event_log

    async def control_plane(self) -> None:
        """Raise if the control plane does not answer."""
        await self._control.ping()

    async def event_log(self) -> None:
        """Raise if the event log does not answer; `Unavailable` naming the reason while its
        storage refuses writes (a full or read-only data directory)."""
        try:
            await self._log.ping()
        except LogUnavailable as exc:
            raise log_refused(exc, "the event log is unavailable") from None
