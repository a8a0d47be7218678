"""``stellwerk pattern test``: try a pattern against an event locally, no server needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import msgspec

from stellwerk.events.envelope import eventbridge_envelope
from stellwerk.patterns import InvalidPatternError, compile_pattern, explain

EXIT_MATCH = 0
EXIT_NO_MATCH = 1
EXIT_INVALID = 2


def _read(value: str) -> str:
    """JSON text given inline or as ``@file``."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise click.BadParameter(f"cannot read {value[1:]}: {error.strerror}") from None
    return value


@click.group()
def pattern() -> None:
    """Work with EventBridge event patterns."""


@pattern.command("test")
@click.option("--pattern", "pattern_text", required=True, help="The pattern: JSON text or @file.")
@click.option("--event", "event_text", required=True, help="The event: JSON text or @file.")
@click.option("--explain", "want_explanation", is_flag=True, help="Say why it does not match.")
@click.option(
    "--view",
    type=click.Choice(["cloudevents", "eventbridge"]),
    default="cloudevents",
    show_default=True,
    help="As a rule of this view sees the event: eventbridge takes it as a stored CloudEvent "
    "and matches its EventBridge envelope.",
)
@click.option(
    "--account",
    default="default",
    show_default=True,
    help="The tenant shown as the envelope's account (--view eventbridge).",
)
def test(
    pattern_text: str, event_text: str, want_explanation: bool, view: str, account: str
) -> None:
    """Exit 0 if the event matches the pattern, 1 if not, 2 if the pattern is invalid."""
    try:
        event: Any = msgspec.json.decode(_read(event_text))
    except msgspec.DecodeError as error:
        raise click.BadParameter(f"the event is not valid JSON: {error}") from None
    if view == "eventbridge":
        if not isinstance(event, dict):
            raise click.BadParameter("with --view eventbridge the event is a CloudEvent object")
        event = eventbridge_envelope(event, account)
    try:
        compiled = compile_pattern(_read(pattern_text))
    except InvalidPatternError as error:
        click.echo(str(error), err=True)
        raise SystemExit(EXIT_INVALID) from None
    if want_explanation:
        result = explain(compiled, event)
        click.echo(str(result))
        matched = result.matched
    else:
        matched = compiled.matches(event)
        click.echo("match" if matched else "no match")
    raise SystemExit(EXIT_MATCH if matched else EXIT_NO_MATCH)
