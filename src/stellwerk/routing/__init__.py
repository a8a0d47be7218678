"""Routing: from a bus's log to deliveries, with one cursor per bus."""

from stellwerk.routing.archiver import Archiver, ArchiverMetrics, archive_floors, trim_archives
from stellwerk.routing.replay import ReplayMetrics, ReplayRunner
from stellwerk.routing.router import (
    NoRouterHooks,
    Router,
    RouterHooks,
    RouteTarget,
    RuleSet,
    RuleSource,
)
from stellwerk.routing.rulebook import RuleBook

__all__ = [
    "Archiver",
    "ArchiverMetrics",
    "NoRouterHooks",
    "ReplayMetrics",
    "ReplayRunner",
    "RouteTarget",
    "Router",
    "RouterHooks",
    "RuleBook",
    "RuleSet",
    "RuleSource",
    "archive_floors",
    "trim_archives",
]
