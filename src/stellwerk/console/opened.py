"""The console at work in one process: its sessions, its templates and the rate sampler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import jinja2

from stellwerk.capability import CapabilityContext, Duty, Facades, Role
from stellwerk.console.charts import chart
from stellwerk.console.rates import Rates
from stellwerk.console.sessions import Sessions
from stellwerk.service import Platform

NAME: Final = "console"
HERE: Final = Path(__file__).parent


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template: bodies, names and error texts come out as text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["chart"] = chart
    return env


class ConsoleOpened:
    def __init__(
        self,
        platform: Platform,
        sessions: Sessions,
        rates: Rates,
        facades: Facades,
        *,
        duties: dict[Role, list[Duty]],
    ) -> None:
        self.platform = platform
        self.sessions = sessions
        self.rates = rates
        self.facades = facades
        self.templates = _environment()
        self._duties = duties

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return self._duties

    async def close(self) -> None:
        return None


async def open_console(context: CapabilityContext) -> ConsoleOpened:
    rates = Rates(context.metrics.registry)
    duties: dict[Role, list[Duty]] = {}
    if Role.GATEWAY in context.roles:
        duties[Role.GATEWAY] = [Duty("console-rates", rates.run)]
    return ConsoleOpened(
        context.platform,
        Sessions(context.key("console-session")),
        rates,
        context.facades,
        duties=duties,
    )
