"""`stellwerk lake query "SQL"`: SQL over the tenant's lake on a running server.

Like `stellwerk replay`, it talks HTTP to the server at `--url` (`STELLWERK_URL`) with a key of
the tenant in `--key` (`STELLWERK_KEY`, read scope is enough), so the server decides which
files the query sees: the tenant's own, never another's. The answer is a table, or the server's
JSON with `--json`. A refused query, an unknown key or no server is one line on stderr and exit
code 2.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table


class LakeCommandError(click.ClickException):
    """One line on stderr, exit code 2."""

    exit_code = 2


async def _query(url: str, key: str, sql: str) -> dict[str, Any]:
    base = url.rstrip("/")
    # The server interrupts a query after 10 s; the rest is the way there and back.
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
            session.post(base + "/v1/lake/query", json={"sql": sql}) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LakeCommandError(f"cannot reach {base}: {str(exc) or type(exc).__name__}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if response.status >= 400 or not isinstance(answer, dict):
        if isinstance(answer, dict):
            raise LakeCommandError(
                f"{response.status} {answer.get('error', '')}: {answer.get('message', text)}"
            )
        raise LakeCommandError(f"{response.status}: {text}")
    return answer


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@click.group()
def lake() -> None:
    """The Parquet lake that `lake` rule targets write."""


@lake.command("query")
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answer instead.")
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
    help="An API key of the tenant (read scope is enough).",
)
def query(sql: str, as_json: bool, url: str, key: str) -> int:
    """Answer one SELECT over the view `events` (the tenant's lake rows)."""
    answer = asyncio.run(_query(url, key, sql))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return 0
    table = Table(*answer["columns"])
    for row in answer["rows"]:
        table.add_row(*(_cell(v) for v in row))
    console = Console(soft_wrap=True)
    console.print(table)
    shown = f"{len(answer['rows']):,} rows"
    console.print(shown + (" (cut: the answer had more)" if answer["truncated"] else ""))
    return 0
