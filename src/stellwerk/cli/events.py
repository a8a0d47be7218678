"""`stellwerk events tail`: watch a bus's events live, as they are recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from urllib.parse import quote

import aiohttp
import click

from stellwerk.patterns import InvalidPatternError, compile_pattern


@click.group()
def events() -> None:
    """Events on buses."""


@events.command("tail")
@click.option("--bus", required=True, help="The bus to watch.")
@click.option("--pattern", default=None, help="Only events matching this EventBridge pattern.")
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    envvar="STELLWERK_URL",
    show_envvar=True,
    help="The Stellwerk server.",
)
@click.option(
    "--key",
    required=True,
    envvar="STELLWERK_KEY",
    show_envvar=True,
    help="An API key with the read (or admin) scope.",
)
@click.option("--after", type=int, default=None, help="Start after this log position.")
@click.option("--max-events", type=int, default=None, help="Stop after this many events.")
def tail(
    bus: str, pattern: str | None, url: str, key: str, after: int | None, max_events: int | None
) -> None:
    """Print each new event of BUS as one JSON line (Ctrl-C stops)."""
    if pattern is not None:
        try:
            compile_pattern(pattern)
        except InvalidPatternError as exc:
            raise click.UsageError(f"--pattern: {exc}") from None
    query = []
    if pattern is not None:
        query.append("pattern=" + quote(pattern))
    if after is not None:
        query.append(f"after={after}")
    endpoint = f"{url.rstrip('/')}/v1/buses/{quote(bus)}/events/stream"
    if query:
        endpoint += "?" + "&".join(query)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(endpoint, key, max_events))


async def _tail(endpoint: str, key: str, max_events: int | None) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    seen = 0
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(endpoint, headers=headers) as response,
        ):
            if response.status != 200:
                body = await response.text()
                try:
                    message = json.loads(body).get("message", body)
                except ValueError:
                    message = body
                raise click.ClickException(f"{response.status}: {message}")
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    sys.stdout.write(line[6:] + "\n")
                    sys.stdout.flush()
                    seen += 1
                    if max_events is not None and seen >= max_events:
                        return
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach {endpoint}: {exc}") from None
