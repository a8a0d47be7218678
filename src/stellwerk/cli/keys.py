"""`stellwerk keys`: create, list and revoke a tenant's API keys."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from stellwerk.auth import Scope
from stellwerk.cli.control import tenant_id, with_control
from stellwerk.cli.options import settings_from, store_options
from stellwerk.storage.control import ApiKeyRecord, ControlPlane, NotFoundError


@click.group()
def keys() -> None:
    """API keys (scopes: ingest, read, admin)."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
@click.option("--scope", required=True, type=click.Choice([s.value for s in Scope]))
@click.option("--description", default="", help="What the key is for.")
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ...} as JSON.')
@store_options
def create(tenant: str, scope: str, description: str, as_json: bool, **values: Any) -> None:
    """Create a key; it is shown once and stored only as a hash."""

    async def action(control: ControlPlane) -> tuple[ApiKeyRecord, str]:
        return await control.create_key(await tenant_id(control, tenant), Scope(scope), description)

    record, key = with_control(settings_from(values), action)
    if as_json:
        click.echo(msgspec.json.encode({"key": key, "id": record.id, "scope": scope}).decode())
    else:
        click.echo(key)


@keys.command("list")
@click.option("--tenant", required=True)
@store_options
def list_(tenant: str, **values: Any) -> None:
    """List a tenant's keys (ids and scopes, never the keys)."""

    async def action(control: ControlPlane) -> list[ApiKeyRecord]:
        return await control.list_keys(await tenant_id(control, tenant))

    for record in with_control(settings_from(values), action):
        state = f"revoked {record.revoked_at.isoformat()}" if record.revoked_at else "active"
        click.echo(f"{record.id}\t{record.scope}\t{state}\t{record.description}")


@keys.command("revoke")
@click.option("--tenant", required=True)
@click.argument("key_id")
@store_options
def revoke(tenant: str, key_id: str, **values: Any) -> None:
    """Revoke a key by its id; servers refuse it within --key-cache-seconds."""

    async def action(control: ControlPlane) -> ApiKeyRecord:
        try:
            return await control.revoke_key(await tenant_id(control, tenant), key_id)
        except NotFoundError as exc:
            raise click.ClickException(str(exc)) from None

    with_control(settings_from(values), action)
    click.echo(f"revoked {key_id}")
