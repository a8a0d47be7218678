"""The web console at `/console`: buses, rules, events and their deliveries, dead letters, the
live tail, archives and replays, keys, connections, failed events and schemas, in a browser.

Server-rendered (Jinja2, autoescaped) with one small script of its own, no build step. A person
logs in with an API key; every page then acts as that key through the same facades as the API
(docs/console.md). The package reaches the core only through `stellwerk.capability` and the
facades of `stellwerk.service`.
"""

from stellwerk.capability import Capability
from stellwerk.console.opened import NAME, ConsoleOpened, open_console
from stellwerk.console.routes import ROUTES
from stellwerk.console.sessions import COOKIE, Session, Sessions

CAPABILITY = Capability(name=NAME, open=open_console, routes=ROUTES)

__all__ = ["CAPABILITY", "COOKIE", "ConsoleOpened", "Session", "Sessions"]
