"""The services one process runs, opened and closed together by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from stellwerk.api.middleware.auth import Authenticator
from stellwerk.config import Settings
from stellwerk.ops.metrics import Metrics
from stellwerk.storage.control import ControlPlane


@dataclass
class Services:
    settings: Settings
    control: ControlPlane
    authenticator: Authenticator
    metrics: Metrics

    async def close(self) -> None:
        await self.control.close()
