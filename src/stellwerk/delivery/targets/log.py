"""The `log` target: write each event to the structured log, to see what a rule would deliver.

Lines go through the process's logging set-up, so the secret redaction of `stellwerk.ops.logging`
applies to the payload too. A payload that is not JSON is logged as text.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog

from stellwerk.delivery.model import Delivered, Outcome
from stellwerk.seams import Delivery

_decoder = msgspec.json.Decoder()


class LogTarget:
    """Logs `delivered event` at info level with the delivery's coordinates and its payload."""

    def __init__(self, logger: Any = None) -> None:
        self._logger = logger if logger is not None else structlog.stdlib.get_logger(__name__)

    async def deliver(self, delivery: Delivery) -> Outcome:
        payload: Any
        try:
            payload = _decoder.decode(delivery.payload)
        except msgspec.DecodeError:
            payload = delivery.payload.decode("utf-8", errors="replace")
        self._logger.info(
            "delivered event",
            tenant=delivery.tenant,
            bus=delivery.bus,
            rule=delivery.rule,
            target=delivery.target_id,
            event_id=delivery.event_id,
            attempt=delivery.attempts + 1,
            content_type=delivery.content_type,
            payload=payload,
        )
        return Delivered("logged")

    async def close(self) -> None:
        """The log belongs to the process."""
