"""The `stellwerk` command: one group, one module per subcommand.

Usage errors (a bad flag or environment value) print one line that says which and why, and exit
with code 2, so scripts and init systems show the reason without a wall of usage text.
"""

from __future__ import annotations

import sys

import click

from stellwerk import __version__
from stellwerk.cli.bench import bench
from stellwerk.cli.events import events
from stellwerk.cli.keys import keys
from stellwerk.cli.pattern import pattern
from stellwerk.cli.serve import serve
from stellwerk.cli.tenants import tenants


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stellwerk")
def cli() -> None:
    """Stellwerk: collect, route, deliver, archive and replay events."""


cli.add_command(serve)
cli.add_command(tenants)
cli.add_command(keys)
cli.add_command(bench)
cli.add_command(pattern)
cli.add_command(events)


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
