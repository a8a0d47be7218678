"""`stellwerk replay start|status|cancel`: replays on a running server, with a progress bar.

Like `stellwerk events tail`, it talks HTTP to the server at `--url` (`STELLWERK_URL`) with the
key in `--key` (`STELLWERK_KEY`). An error (bad input, an unknown replay, no server) is one line
on stderr and exit code 2. `start --wait` and `status --wait` follow the replay to its end and
exit 0 when it completed, 1 when it was cancelled or failed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

POLL_SECONDS: Final = 0.5
FINISHED: Final = ("completed", "cancelled", "failed")
_T = TypeVar("_T")


class ReplayCommandError(click.ClickException):
    """One line on stderr, exit code 2."""

    exit_code = 2


class Client:
    """The few replay calls the commands make, each raising `ReplayCommandError` on failure."""

    def __init__(self, url: str, key: str) -> None:
        self.base = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, headers=self.headers) as session,
                session.request(method, self.base + path, json=body) as response,
            ):
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = str(exc) or type(exc).__name__
            raise ReplayCommandError(f"cannot reach {self.base}: {message}") from None
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if response.status >= 400 or not isinstance(answer, dict):
            message = answer.get("message", text) if isinstance(answer, dict) else text
            raise ReplayCommandError(f"{response.status}: {message}")
        return answer

    async def replay(self, name: str) -> dict[str, Any]:
        return await self.call("GET", f"/v1/replays/{quote(name, safe='')}")


def _run(work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return asyncio.run(work())


_url = click.option(
    "--url",
    default="http://127.0.0.1:8080",
    envvar="STELLWERK_URL",
    show_envvar=True,
    help="The Stellwerk server.",
)
_key = click.option(
    "--key",
    required=True,
    envvar="STELLWERK_KEY",
    show_envvar=True,
    help="An API key of the tenant (admin scope; read is enough for status).",
)
_wait = click.option("--wait", is_flag=True, help="Follow the replay to its end.")


@click.group()
def replay() -> None:
    """Replay archived events to the rules of their bus."""


@replay.command("start")
@click.argument("name")
@click.option("--archive", required=True, help="The archive to replay from.")
@click.option("--bus", default="default", show_default=True, help="The archive's bus.")
@click.option("--start", "start", required=True, help="Window start, RFC 3339 (inclusive).")
@click.option("--end", "end", required=True, help="Window end, RFC 3339 (exclusive).")
@click.option("--rule", "rules", multiple=True, help="A rule to replay to (repeat; default all).")
@click.option("--description", default="", help="What the replay is for.")
@_wait
@_url
@_key
def start(
    name: str,
    archive: str,
    bus: str,
    start: str,
    end: str,
    rules: tuple[str, ...],
    description: str,
    wait: bool,
    url: str,
    key: str,
) -> int:
    """Start replay NAME of ARCHIVE's events recorded from --start to --end."""
    body: dict[str, Any] = {
        "name": name,
        "archive": archive,
        "bus": bus,
        "start": start,
        "end": end,
        "description": description,
    }
    if rules:
        body["rules"] = list(rules)
    client = Client(url, key)
    created = _run(lambda: client.call("POST", "/v1/replays", body))
    if not wait:
        # `total` is counted once the replay starts: `status` shows it.
        click.echo(f"replay {name}: {created['state']}")
        return 0
    return _show(client, name, follow=True)


@replay.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the replay as JSON instead.")
@_wait
@_url
@_key
def status(name: str, as_json: bool, wait: bool, url: str, key: str) -> int:
    """Show replay NAME's state and progress."""
    client = Client(url, key)
    if as_json:
        click.echo(json.dumps(_run(lambda: client.replay(name)), indent=2))
        return 0
    return _show(client, name, follow=wait)


@replay.command("cancel")
@click.argument("name")
@_url
@_key
def cancel(name: str, url: str, key: str) -> int:
    """Cancel replay NAME (deliveries it queued already still go out)."""
    client = Client(url, key)
    cancelled = _run(lambda: client.call("DELETE", f"/v1/replays/{quote(name, safe='')}"))
    click.echo(f"replay {name}: cancelled after {cancelled['replayed']:,} events")
    return 0


def _show(client: Client, name: str, *, follow: bool) -> int:
    """A progress bar of the replay, once or (follow) until it ends; the exit code."""
    console = Console()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )

    async def watch() -> dict[str, Any]:
        current = await client.replay(name)
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(name, state=current["state"])
            while True:
                total = max(current["total"], current["replayed"]) or None
                progress.update(
                    task, completed=current["replayed"], total=total, state=current["state"]
                )
                if not follow or current["state"] in FINISHED:
                    return current
                await asyncio.sleep(POLL_SECONDS)
                current = await client.replay(name)

    final = _run(watch)
    line = f"replay {name}: {final['state']}, {final['replayed']:,} of {final['total']:,} events"
    if final.get("error"):
        line += f" ({final['error']})"
    console.print(line, highlight=False)
    if final["state"] in ("cancelled", "failed"):
        return 1
    return 0
