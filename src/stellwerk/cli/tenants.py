"""`stellwerk tenants`: create tenants (with their first keys) and list them."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from stellwerk.cli.control import with_admin
from stellwerk.cli.options import settings_from, store_options
from stellwerk.names import InvalidNameError, check_name


@click.group()
def tenants() -> None:
    """Tenants: the isolation unit of Stellwerk."""


@tenants.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@store_options
def create(name: str, as_json: bool, **values: Any) -> None:
    """Create tenant NAME with an admin and an ingest key (shown once)."""
    try:
        check_name("tenant", name)  # before the stores open: a typo is told at once
    except InvalidNameError as exc:
        raise click.UsageError(str(exc)) from None
    provisioned = with_admin(settings_from(values), lambda admin: admin.tenants.create(name))
    if as_json:
        click.echo(msgspec.json.encode(provisioned).decode())
        return
    click.echo(f"tenant:     {provisioned.tenant}")
    click.echo(f"admin key:  {provisioned.admin_key}")
    click.echo(f"ingest key: {provisioned.ingest_key}")
    click.echo("The keys are shown only now; store them safely.", err=True)


@tenants.command("list")
@store_options
def list_(**values: Any) -> None:
    """List tenants."""
    records = with_admin(settings_from(values), lambda admin: admin.tenants.all())
    for record in records:
        click.echo(f"{record.name}\t{record.created_at.isoformat()}")
