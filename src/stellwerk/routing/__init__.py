"""Routing: from a bus's log to deliveries, with one cursor per bus."""

from stellwerk.routing.router import (
    NoRouterHooks,
    Router,
    RouterHooks,
    RouteTarget,
    RuleSet,
    RuleSource,
)

__all__ = ["NoRouterHooks", "RouteTarget", "Router", "RouterHooks", "RuleSet", "RuleSource"]
