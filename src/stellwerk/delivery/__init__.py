"""Delivery: events on their way to targets, with retries and dead letters."""

from stellwerk.delivery.builder import TargetBuilder
from stellwerk.delivery.bus_access import BusAccess
from stellwerk.delivery.kinds import LateTarget, TargetKind, TargetKinds
from stellwerk.delivery.metrics import DeliveryMetrics
from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater, Target
from stellwerk.delivery.registry import TargetRegistry
from stellwerk.delivery.throttle import TenantThrottle
from stellwerk.delivery.worker import DeliveryWorker, TargetBinding

__all__ = [
    "BusAccess",
    "Delivered",
    "DeliveryMetrics",
    "DeliveryWorker",
    "GiveUp",
    "LateTarget",
    "Outcome",
    "RetryLater",
    "Target",
    "TargetBinding",
    "TargetBuilder",
    "TargetKind",
    "TargetKinds",
    "TargetRegistry",
    "TenantThrottle",
]
