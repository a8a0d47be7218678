"""Signals between processes: over Unix datagrams between the processes of one data directory
(`UnixSignals`, embedded mode) and over core NATS (`NatsSignals`, scale-out).

The seam and its one-process form, `LocalSignals`, are in `stellwerk.seams`. `NatsSignals` is
loaded when first named, so that embedded mode never imports nats-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stellwerk.storage.signals.unix import SIGNALS_DIR, UnixSignals, http_address, signal_address

if TYPE_CHECKING:
    from stellwerk.storage.signals.nats import NatsSignals

__all__ = ["SIGNALS_DIR", "NatsSignals", "UnixSignals", "http_address", "signal_address"]


def __getattr__(name: str) -> object:
    if name == "NatsSignals":
        from stellwerk.storage.signals.nats import NatsSignals

        return NatsSignals
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
