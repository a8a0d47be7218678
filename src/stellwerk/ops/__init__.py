"""Operations: metrics and logging of a running Stellwerk process."""

from stellwerk.ops.lifecycle import Lifecycle, NotReadyError, Phase, cancelled_meanwhile
from stellwerk.ops.logging import configure_logging
from stellwerk.ops.metrics import Metrics

__all__ = [
    "Lifecycle",
    "Metrics",
    "NotReadyError",
    "Phase",
    "cancelled_meanwhile",
    "configure_logging",
]
