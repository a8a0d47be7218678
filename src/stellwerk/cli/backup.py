"""`stellwerk backup DEST` and `stellwerk restore SRC`: consistent copies of a data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stellwerk.cli.options import setting_option, settings_from
from stellwerk.storage.sqlite import BackupError
from stellwerk.storage.sqlite import backup as make_backup
from stellwerk.storage.sqlite import restore as restore_backup


@click.command()
@click.argument("destination", type=click.Path(path_type=Path))
@setting_option("data_dir", "Data directory to copy (the server may keep running).")
def backup(destination: Path, **values: Any) -> None:
    """Copy a live embedded data directory to DESTINATION without stopping ingestion."""
    settings = settings_from(values)
    try:
        result = make_backup(settings.data_dir, destination)
    except (BackupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    names = ", ".join(result.manifest.databases + result.manifest.files)
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
