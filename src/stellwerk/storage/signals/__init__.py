"""Signals between processes on core NATS (`NatsSignals`).

The seam and its one-process form, `LocalSignals`, are in `stellwerk.seams`.
"""

from stellwerk.storage.signals.nats import NatsSignals

__all__ = ["NatsSignals"]
