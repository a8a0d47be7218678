"""Buses with their rates, a bus's page (rules, recent events, sending a test event), and
rules: view, edit, create, delete, and the pattern editor with its "why not" explanation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from starlette.responses import Response

from stellwerk.console.delivered import from_history
from stellwerk.console.rates import KEPT, Series
from stellwerk.console.web import PREFIX, BadForm, View, page, reading_page
from stellwerk.events.envelope import eventbridge_envelope
from stellwerk.patterns import InvalidPatternError, explain
from stellwerk.rules import Rule, RuleInput
from stellwerk.service import InvalidRequest, StoredEvent

RECENT: Final = 20  # events a bus's page shows, read backwards from the log's end by position
_PRETTY: Final = msgspec.json.Encoder(order="sorted")
_HIDDEN_TARGET_FIELDS: Final = ("secret", "previous_secret", "previous_secret_expires_at")


def pretty(value: Any) -> str:
    """JSON for people: indented, keys sorted (the template escapes it)."""
    return msgspec.json.format(_PRETTY.encode(value), indent=2).decode()


@page
async def buses(view: View) -> Response:
    found = await view.platform.buses.all(view.principal)
    tenant = view.principal.tenant
    rows = [
        (bus, view.console.rates.bus_rate(tenant, bus.name), await _end(view, bus.name))
        for bus in found
    ]
    rates = view.console.rates
    series = rates.series(tenant)
    drawn = await from_history(
        view.platform, view.principal, datetime.now(UTC), every=rates.every, buckets=KEPT
    )
    if drawn is not None:  # the history is every process's: a scale-out gateway sees it too
        series = Series(
            series.ingest,
            drawn.delivery,
            drawn.duration_ms,
            latency_label="Delivered attempts' duration",
            complete=drawn.complete,
        )
    return view.render("buses.html", rows=rows, series=series)


async def _end(view: View, bus: str) -> int:
    return await view.platform.tail.end(view.principal, bus)


async def recent_events(view: View, bus: str, count: int = RECENT) -> list[StoredEvent]:
    """The bus's newest events, newest first, without scanning: back from the end position."""
    end = await _end(view, bus)
    if end == 0:
        return []
    events = await view.platform.tail.page(view.principal, bus, max(0, end - count), count)
    return list(reversed(events))


@page
async def bus(view: View) -> Response:
    name = view.param("bus")
    found = await view.platform.buses.get(view.principal, name)
    rules = await view.platform.rules.all(view.principal, name)
    events = [(e, _decoded(e)) for e in await recent_events(view, name)]
    return view.render(
        "bus.html",
        bus=found,
        rules=rules,
        events=events,
        rate=view.console.rates.bus_rate(view.principal.tenant, name),
        sent=view.request.query_params.get("sent"),
    )


def _decoded(event: StoredEvent) -> dict[str, Any]:
    decoded = msgspec.json.decode(event.body)
    return decoded if isinstance(decoded, dict) else {}


@page
async def send_event(view: View) -> Response:
    """Put one event on the bus as ingest takes it (an admin key may ingest)."""
    name = view.param("bus")
    body = (await view.field("event")).encode()

    async def read_body() -> bytes:
        return body

    answer = await view.platform.ingest.put(view.principal, name, "application/json", {}, read_body)
    result = msgspec.json.decode(answer)
    failed = result.get("failed") or []
    if failed:
        raise InvalidRequest(f"the event was refused: {failed[0].get('message')}")
    return view.redirect(f"{PREFIX}/buses/{name}?sent=1")


def _editable(rule: Rule | None) -> dict[str, str]:
    """A rule's fields as the editor's text boxes hold them (no signing secrets)."""
    if rule is None:
        return {
            "name": "",
            "pattern": '{\n  "type": ["order.created"]\n}',
            "targets": '[\n  {"id": "log", "type": "log"}\n]',
            "state": "enabled",
            "description": "",
        }
    targets = [
        {k: v for k, v in msgspec.to_builtins(t).items() if k not in _HIDDEN_TARGET_FIELDS}
        for t in rule.targets
    ]
    return {
        "name": rule.name,
        "pattern": pretty(rule.pattern) if rule.pattern is not None else "",
        "targets": pretty(targets),
        "state": rule.state,
        "description": rule.description,
    }


async def _sample_event(view: View, bus: str) -> str:
    """The event the pattern test starts with: the one at `?at=` (from an event's page), else
    the bus's newest, else an example."""
    at = view.request.query_params.get("at", "")
    if at.isdigit() and int(at) > 0:
        found = await view.platform.tail.page(view.principal, bus, int(at) - 1, 1)
        if found and found[0].position == int(at):
            return pretty(_decoded(found[0]))
    recent = await recent_events(view, bus, 1)
    if recent:
        return pretty(_decoded(recent[0]))
    return pretty(
        {
            "specversion": "1.0",
            "id": "example-1",
            "source": "console",
            "type": "order.created",
            "data": {"total": 120},
        }
    )


@page
async def rule(view: View) -> Response:
    bus_name, name = view.param("bus"), view.param("rule")
    found = await view.platform.rules.get(view.principal, bus_name, name)
    return view.render(
        "rule.html",
        bus=bus_name,
        rule=found,
        fields=_editable(found),
        event=await _sample_event(view, bus_name),
        tested=None,
        problem=None,
    )


@page
async def new_rule(view: View) -> Response:
    bus_name = view.param("bus")
    await view.platform.buses.get(view.principal, bus_name)
    return view.render(
        "rule.html",
        bus=bus_name,
        rule=None,
        fields=_editable(None),
        event=await _sample_event(view, bus_name),
        tested=None,
        problem=None,
    )


async def _fields(view: View) -> dict[str, str]:
    return {
        "name": (await view.field("name", default="")).strip(),
        "pattern": await view.field("pattern", default=""),
        "targets": await view.field("targets", default="[]"),
        "state": await view.field("state", default="enabled"),
        "description": await view.field("description", default=""),
    }


def _rule_input(fields: dict[str, str], existing: Rule | None) -> RuleInput:
    try:
        pattern = msgspec.json.decode(fields["pattern"]) if fields["pattern"].strip() else None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the pattern is not JSON: {exc}", field="pattern") from None
    try:
        targets = msgspec.json.decode(fields["targets"] or "[]")
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the targets are not JSON: {exc}", field="targets") from None
    body: dict[str, Any] = {
        "pattern": pattern,
        "targets": targets,
        "state": fields["state"],
        "description": fields["description"],
    }
    if existing is not None:
        body["view"] = existing.view
        if existing.schedule is not None:
            body["schedule"], body["pattern"] = existing.schedule, None
    try:
        return msgspec.convert(body, RuleInput)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"the rule is not valid: {exc}") from None


@page
async def save_rule(view: View) -> Response:
    """Create (the form names the rule) or replace a rule; errors come back in the editor."""
    bus_name = view.param("bus")
    fields = await _fields(view)
    name = view.request.path_params.get("rule") or fields["name"]
    existing: Rule | None = None
    if "rule" in view.request.path_params:
        existing = await view.platform.rules.get(view.principal, bus_name, name)
    elif not name:
        raise BadForm("give the rule a name", field="name")
    try:
        await view.platform.rules.put(view.principal, bus_name, name, _rule_input(fields, existing))
    except (InvalidRequest, BadForm) as exc:
        fields["name"] = name
        return view.render(
            "rule.html",
            400,
            bus=bus_name,
            rule=existing,
            fields=fields,
            event=await view.field("event", default=""),
            tested=None,
            problem=exc.message + (f" (at {exc.field})" if exc.field else ""),
        )
    return view.redirect(f"{PREFIX}/buses/{bus_name}/rules/{name}")


@page
async def delete_rule(view: View) -> Response:
    bus_name, name = view.param("bus"), view.param("rule")
    await view.form()
    await view.platform.rules.delete(view.principal, bus_name, name)
    return view.redirect(f"{PREFIX}/buses/{bus_name}")


@reading_page
async def test_pattern(view: View) -> Response:
    """The editor's "test": does the pasted event match the pattern, and if not, why not."""
    bus_name = view.param("bus")
    name = view.request.path_params.get("rule")
    existing = await view.platform.rules.get(view.principal, bus_name, name) if name else None
    fields = await _fields(view)
    if name:
        fields["name"] = name
    event_text = await view.field("event", default="")
    tested: dict[str, Any] | None = None
    problem: str | None = None
    try:
        event = msgspec.json.decode(event_text)
        if not isinstance(event, dict):
            raise InvalidRequest("the event must be a JSON object", field="event")
        seen = event
        if existing is not None and existing.view == "eventbridge":
            seen = eventbridge_envelope(event, view.principal.tenant)
        explanation = explain(fields["pattern"], seen)
        tested = {"matched": explanation.matched, "message": str(explanation)}
        tested["mismatches"] = [
            (number, m) for number, c in enumerate(explanation.clauses, 1) for m in c.mismatches
        ]
    except msgspec.DecodeError as exc:
        problem = f"the event is not JSON: {exc}"
    except InvalidPatternError as exc:
        problem = f"the pattern is not valid: {exc}"
    except InvalidRequest as exc:
        problem = exc.message
    return view.render(
        "rule.html",
        bus=bus_name,
        rule=existing,
        fields=fields,
        event=event_text,
        tested=tested,
        problem=problem,
    )
