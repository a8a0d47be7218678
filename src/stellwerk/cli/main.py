"""The `stellwerk` command: one group, one module per subcommand, each imported when used.

Importing a subcommand's module only when it runs keeps `stellwerk pattern test` and a refused
flag fast: the server's dependencies (SQLAlchemy, aiohttp, ...) load only for commands that use
them. Usage errors (a bad flag or environment value) print one line that says which and why, and
exit with code 2, so scripts and init systems show the reason without a wall of usage text.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from stellwerk import __version__

COMMANDS = {
    "serve": "stellwerk.cli.serve:serve",
    "tenants": "stellwerk.cli.tenants:tenants",
    "keys": "stellwerk.cli.keys:keys",
    "pattern": "stellwerk.cli.pattern:pattern",
    "events": "stellwerk.cli.events:events",
    "bench": "stellwerk.cli.bench:bench",
    "backup": "stellwerk.cli.backup:backup",
    "restore": "stellwerk.cli.backup:restore",
    "replay": "stellwerk.cli.replay:replay",
    "receive": "stellwerk.cli.receive:receive",
    "lake": "stellwerk.cli.lake:lake",
    "peers": "stellwerk.cli.peers:peers",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stellwerk")
def cli() -> None:
    """Stellwerk: collect, route, deliver, archive and replay events."""


def main(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="stellwerk", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"stellwerk: error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"stellwerk: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("stellwerk: aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
