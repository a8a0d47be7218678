"""`stellwerk keys`: create, list and revoke a tenant's API keys."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from stellwerk.auth import Scope
from stellwerk.cli.control import Admin, with_admin
from stellwerk.cli.options import settings_from, store_options
from stellwerk.service import CreatedKey, KeyInfo, KeyInput


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

    async def action(admin: Admin) -> CreatedKey:
        operator = await admin.tenants.operator(tenant)
        body = KeyInput(scope=scope, description=description)  # type: ignore[arg-type]
        return await admin.keys.create(operator.tenant_id, body)

    created = with_admin(settings_from(values), action)
    if as_json:
        click.echo(
            msgspec.json.encode({"key": created.key, "id": created.id, "scope": scope}).decode()
        )
    else:
        click.echo(created.key)


@keys.command("list")
@click.option("--tenant", required=True)
@store_options
def list_(tenant: str, **values: Any) -> None:
    """List a tenant's keys (ids and scopes, never the keys)."""

    async def action(admin: Admin) -> list[KeyInfo]:
        return await admin.keys.all((await admin.tenants.operator(tenant)).tenant_id)

    for info in with_admin(settings_from(values), action):
        state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "active"
        click.echo(f"{info.id}\t{info.scope}\t{state}\t{info.description}")


@keys.command("revoke")
@click.option("--tenant", required=True)
@click.argument("key_id")
@store_options
def revoke(tenant: str, key_id: str, **values: Any) -> None:
    """Revoke a key by its id; servers refuse it within --key-cache-seconds."""

    async def action(admin: Admin) -> KeyInfo:
        return await admin.keys.revoke((await admin.tenants.operator(tenant)).tenant_id, key_id)

    with_admin(settings_from(values), action)
    click.echo(f"revoked {key_id}")
