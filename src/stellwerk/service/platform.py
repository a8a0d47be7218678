"""The facades of one process, built together over its stores: what the edges call."""

from __future__ import annotations

from dataclasses import dataclass

from stellwerk.service.access import Gate
from stellwerk.service.archives import Archives
from stellwerk.service.buses import Buses
from stellwerk.service.connections import Connections
from stellwerk.service.dead_letters import DeadLetters
from stellwerk.service.erasures import Erasures
from stellwerk.service.failed_events import FailedEvents
from stellwerk.service.grants import Grants
from stellwerk.service.history import History
from stellwerk.service.ingest import Ingest
from stellwerk.service.keys import Keys
from stellwerk.service.quotas import Quotas
from stellwerk.service.readiness import Readiness
from stellwerk.service.replays import Replays
from stellwerk.service.rules import Rules
from stellwerk.service.schemas import Schemas
from stellwerk.service.tail import Tail
from stellwerk.service.tenants import Tenants


@dataclass(frozen=True, slots=True)
class Platform:
    gate: Gate
    ingest: Ingest
    tail: Tail
    buses: Buses
    rules: Rules
    archives: Archives
    replays: Replays
    erasures: Erasures
    keys: Keys
    schemas: Schemas
    connections: Connections
    grants: Grants
    dead_letters: DeadLetters
    history: History
    failed_events: FailedEvents
    tenants: Tenants
    readiness: Readiness
    quotas: Quotas
