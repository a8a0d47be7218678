"""`stellwerk backup DEST`, `stellwerk backup verify DIR` and `stellwerk restore SRC`: consistent
copies of a data directory, checked without restoring them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stellwerk.app import default_capabilities
from stellwerk.cli.options import setting_option, settings_from
from stellwerk.storage.sqlite import BackupError
from stellwerk.storage.sqlite import backup as make_backup
from stellwerk.storage.sqlite import restore as restore_backup
from stellwerk.storage.sqlite import verify as verify_backup


class TakeByDefault(click.Group):
    """`backup DEST` takes a backup; `backup verify DIR` checks one. A first argument that
    names no subcommand is the destination (`./verify` for a folder called verify)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else None
        if first not in self.commands and first not in ("-h", "--help"):
            args = ["take", *args]
        return super().parse_args(ctx, args)


@click.group(cls=TakeByDefault)
def backup() -> None:
    """Copy a live embedded data directory (backup DEST), or check a copy (backup verify DIR)."""


@backup.command("verify")
@click.argument("source", type=click.Path(path_type=Path))
def verify(source: Path) -> None:
    """Check a backup without restoring it: its manifest, databases and files."""
    try:
        manifest = verify_backup(source)
    except (BackupError, OSError) as exc:
        raise click.ClickException(f"{source}: {exc}") from None
    names = ", ".join(manifest.databases + manifest.parts + manifest.files)
    click.echo(
        f"{source}: a whole backup, taken {manifest.created_at.isoformat()} by Stellwerk "
        f"{manifest.version} ({names})"
    )


@backup.command("take")
@click.argument("destination", type=click.Path(path_type=Path))
@setting_option("data_dir", "Data directory to copy (the server may keep running).")
def take(destination: Path, **values: Any) -> None:
    """Copy a live embedded data directory to DESTINATION without stopping ingestion."""
    settings = settings_from(values)
    parts = [part for capability in default_capabilities() for part in capability.backup_parts]
    try:
        result = make_backup(settings.data_dir, destination, parts)
    except (BackupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    names = ", ".join(result.manifest.databases + result.manifest.parts + result.manifest.files)
    click.echo(f"backed up {settings.data_dir} to {destination} ({names})")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@setting_option("data_dir", "Empty data directory to restore into.")
def restore(source: Path, **values: Any) -> None:
    """Restore a backup from SOURCE into an empty data directory."""
    settings = settings_from(values)
    try:
        manifest = restore_backup(source, settings.data_dir)
    except (BackupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"restored {len(manifest.databases)} databases from {source} "
        f"(taken {manifest.created_at.isoformat()}) into {settings.data_dir}"
    )
