"""The console's routes, all under `/console` (matched ahead of the API, outside it: no key
header, the session cookie instead)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from stellwerk.console import routes_archives as archives
from stellwerk.console import routes_buses as buses
from stellwerk.console import routes_events as events
from stellwerk.console import routes_session as session
from stellwerk.console import routes_tail as tail
from stellwerk.console import routes_tenant as tenant
from stellwerk.console.opened import HERE
from stellwerk.console.web import PREFIX

_BUS = PREFIX + "/buses/{bus}"
_RULE = _BUS + "/rules/{rule}"

ROUTES: list[BaseRoute] = [
    Route(PREFIX, session.index, methods=["GET"]),
    Route(PREFIX + "/login", session.login_form, methods=["GET"]),
    Route(PREFIX + "/login", session.login, methods=["POST"]),
    Route(PREFIX + "/logout", session.logout, methods=["POST"]),
    Mount(PREFIX + "/static", app=StaticFiles(directory=HERE / "static"), name="console-static"),
    Route(PREFIX + "/buses", buses.buses, methods=["GET"]),
    Route(_BUS, buses.bus, methods=["GET"]),
    Route(_BUS + "/events", buses.send_event, methods=["POST"]),
    Route(_BUS + "/new-rule", buses.new_rule, methods=["GET"]),
    Route(_BUS + "/rules", buses.save_rule, methods=["POST"]),
    Route(_BUS + "/test-pattern", buses.test_pattern, methods=["POST"]),
    Route(_RULE, buses.rule, methods=["GET"]),
    Route(_RULE, buses.save_rule, methods=["POST"]),
    Route(_RULE + "/test", buses.test_pattern, methods=["POST"]),
    Route(_RULE + "/delete", buses.delete_rule, methods=["POST"]),
    Route(_RULE + "/targets/{target}/attempts", events.attempts, methods=["GET"]),
    # Event ids are any text (`o/1` too): the id is the rest of the path.
    Route(_BUS + "/events/{event:path}/redeliver", events.redeliver, methods=["POST"]),
    Route(_BUS + "/events/{event:path}", events.event, methods=["GET"]),
    Route(_BUS + "/dead-letters", events.dead_letters, methods=["GET"]),
    Route(_BUS + "/dead-letters/redrive", events.redrive, methods=["POST"]),
    Route(_BUS + "/tail", tail.tail_page, methods=["GET"]),
    Route(_BUS + "/tail/stream", tail.tail_stream, methods=["GET"]),
    Route(_BUS + "/archives", archives.archives, methods=["GET"]),
    Route(_BUS + "/archives", archives.create_archive, methods=["POST"]),
    Route(_BUS + "/archives/{archive}/delete", archives.delete_archive, methods=["POST"]),
    Route(PREFIX + "/replays", archives.replays, methods=["GET"]),
    Route(PREFIX + "/replays", archives.start_replay, methods=["POST"]),
    Route(PREFIX + "/replays/{replay}/progress", archives.replay_progress, methods=["GET"]),
    Route(PREFIX + "/replays/{replay}/cancel", archives.cancel_replay, methods=["POST"]),
    Route(PREFIX + "/keys", tenant.keys, methods=["GET"]),
    Route(PREFIX + "/keys", tenant.create_key, methods=["POST"]),
    Route(PREFIX + "/keys/{key}/revoke", tenant.revoke_key, methods=["POST"]),
    Route(PREFIX + "/connections", tenant.connections, methods=["GET"]),
    Route(PREFIX + "/schemas", tenant.schemas, methods=["GET"]),
    Route(_BUS + "/failed-events", tenant.failed_events, methods=["GET"]),
    Route(_BUS + "/failed-events/resubmit", tenant.resubmit, methods=["POST"]),
    Route(PREFIX + "/endpoints", tenant.endpoints, methods=["GET"]),
    Route(PREFIX + "/sections/{section}", tenant.section, methods=["GET"]),
]
