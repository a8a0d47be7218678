"""The API's routes, one module per resource; `ENDPOINTS` is every one of them, in order."""

from stellwerk.api.endpoints import Endpoint
from stellwerk.api.routes import (
    archives,
    buses,
    connections,
    dead_letters,
    erasures,
    events,
    failed_events,
    grants,
    health,
    history,
    keys,
    patterns,
    replays,
    rules,
    schemas,
    tail,
    target_secrets,
)

ENDPOINTS: list[Endpoint] = [
    *health.ENDPOINTS,
    *buses.ENDPOINTS,
    *events.ENDPOINTS,
    *failed_events.ENDPOINTS,
    *dead_letters.ENDPOINTS,
    *grants.ENDPOINTS,
    *schemas.ENDPOINTS,
    *keys.ENDPOINTS,
    *connections.ENDPOINTS,
    *patterns.ENDPOINTS,
    *rules.ENDPOINTS,
    *target_secrets.ENDPOINTS,
    *archives.ENDPOINTS,
    *tail.ENDPOINTS,
    *replays.ENDPOINTS,
    *erasures.ENDPOINTS,
    # Last: its `events/{id:path}` would take `events/stream` (the tail) before that route;
    # the tail hands the event `stream` over when asked for JSON (`history.wants_json`).
    *history.ENDPOINTS,
]
HEALTH_ENDPOINTS: list[Endpoint] = health.ENDPOINTS

__all__ = ["ENDPOINTS", "HEALTH_ENDPOINTS"]
