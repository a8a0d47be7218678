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
from stellwerk.routing.rulebook import RuleBook, redelivery
from stellwerk.routing.standby import SiteRouting, Standby
from stellwerk.routing.ticker import RuleTicker

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
    "RuleTicker",
    "SiteRouting",
    "Standby",
    "archive_floors",
    "redelivery",
    "trim_archives",
]
