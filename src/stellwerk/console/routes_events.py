"""What happened to an event: its page (body, matched rules, each target's attempts, redeliver),
a target's attempts, and the dead letters of a bus with their redrive."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import msgspec
from starlette.responses import Response

from stellwerk.console.routes_buses import pretty
from stellwerk.console.web import PREFIX, BadForm, View, page
from stellwerk.service import (
    ATTEMPT_OUTCOMES,
    EventHistory,
    NotFound,
    NotSupported,
)

LETTERS_PAGE: Final = 50
ATTEMPTS_PAGE: Final = 50


def _position(view: View) -> int | None:
    at = view.request.query_params.get("at", "")
    return int(at) if at.isdigit() and int(at) > 0 else None


async def _history(view: View, bus: str, event_id: str) -> EventHistory:
    """The event's delivery history; for an event no rule matched (no history), the event read
    at the position its link gave (`?at=`), if it is the same event of the same tenant."""
    try:
        return await view.platform.history.event(view.principal, bus, event_id)
    except (NotFound, NotSupported):  # no history: none kept, or no rule matched it
        position = _position(view)
        if position is None:
            raise
    await view.platform.buses.get(view.principal, bus)
    found = await view.platform.tail.page(view.principal, bus, position - 1, 1)
    if not found or found[0].position != position or found[0].id != event_id:
        raise NotFound.of(f"event {event_id!r} on bus {bus!r}") from None
    return EventHistory(event_id, position, msgspec.json.decode(found[0].body), [], [])


@page
async def event(view: View) -> Response:
    bus, event_id = view.param("bus"), view.param("event")
    history = await _history(view, bus, event_id)
    rules = await view.platform.rules.all(view.principal, bus)
    return view.render(
        "event.html",
        bus=bus,
        history=history,
        rules=[r.name for r in rules if r.pattern is not None],
        body=pretty(history.event) if history.event is not None else None,
        redelivered=view.request.query_params.get("redelivered"),
    )


@page
async def redeliver(view: View) -> Response:
    """Send the event again (`History.redeliver`): to every target its history names, or to the
    one rule and target chosen (`to` is `rule` or `rule/target`). Delivered, retrying and
    dead-lettered targets alike; a dead letter stays in the queue until it is redriven."""
    bus, event_id = view.param("bus"), view.param("event")
    form = await view.form()
    to = form.get("to") or ""
    rule, _, target = to.partition("/")
    at = form.get("at") or ""
    done = await view.platform.history.redeliver(
        view.principal,
        bus,
        event_id,
        position=int(at) if at.isdigit() and int(at) > 0 else None,
        rule=rule or None,
        target=target or None,
    )
    return view.redirect(
        f"{PREFIX}/buses/{bus}/events/{quote(event_id, safe='/')}"
        f"?at={done.position}&redelivered={len(done.targets)}"
    )


@page
async def attempts(view: View) -> Response:
    bus, rule, target = view.param("bus"), view.param("rule"), view.param("target")
    query = view.request.query_params
    outcome = query.get("outcome") or None
    if outcome is not None and outcome not in ATTEMPT_OUTCOMES:
        raise BadForm(f"outcome must be one of {', '.join(ATTEMPT_OUTCOMES)}", field="outcome")
    after_text = query.get("after", "0")
    if not after_text.isdigit():
        raise BadForm("after must be an attempt id", field="after")
    found = await view.platform.history.attempts(
        view.principal,
        bus,
        rule,
        target,
        outcome=outcome,
        after=int(after_text),
        limit=ATTEMPTS_PAGE,
    )
    return view.render(
        "attempts.html",
        bus=bus,
        rule=rule,
        target=target,
        attempts=found,
        outcome=outcome or "",
        outcomes=ATTEMPT_OUTCOMES,
        next_after=found[-1].id if len(found) == ATTEMPTS_PAGE else None,
    )


@page
async def dead_letters(view: View) -> Response:
    bus = view.param("bus")
    after_text = view.request.query_params.get("after", "0")
    if not after_text.isdigit():
        raise BadForm("after must be a dead letter's id", field="after")
    letters = await view.platform.dead_letters.all(
        view.principal, bus, rule=None, target=None, after=int(after_text), limit=LETTERS_PAGE
    )
    return view.render(
        "dead_letters.html",
        bus=bus,
        letters=letters,
        payloads={d.id: _short(d.payload) for d in letters},
        next_after=letters[-1].id if len(letters) == LETTERS_PAGE else None,
        redriven=view.request.query_params.get("redriven"),
    )


def _short(payload: Any) -> str:
    text = payload if isinstance(payload, str) else msgspec.json.encode(payload).decode()
    return text if len(text) <= 200 else text[:200] + "…"


@page
async def redrive(view: View) -> Response:
    bus = view.param("bus")
    form = await view.form()
    ids: list[int] | None
    if form.get("all") == "1":
        ids = None
    else:
        chosen = form.getlist("id")
        if not chosen:
            raise BadForm("choose the dead letters to redrive, or redrive all", field="id")
        if not all(i.isdigit() for i in chosen):
            raise BadForm("a dead letter's id is a number", field="id")
        ids = [int(i) for i in chosen]
    moved = await view.platform.dead_letters.redrive(view.principal, bus, ids)
    return view.redirect(f"{PREFIX}/buses/{bus}/dead-letters?redriven={moved}")
