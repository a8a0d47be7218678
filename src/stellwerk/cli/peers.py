"""`stellwerk peers add`: pair a tenant of this site with a peer site (run it on both sites)."""

from __future__ import annotations

import os
from typing import Any

import click

from stellwerk.cli.control import Admin, with_admin
from stellwerk.cli.options import setting_option, settings_from, store_options
from stellwerk.secrets import load_or_create_key
from stellwerk.sites import add_peer


@click.group()
def peers() -> None:
    """Peer sites: where a tenant's events are replicated and who takes over."""


@peers.command("add")
@click.argument("name")
@click.option("--url", required=True, help="Where the peer site answers, e.g. https://b.example.")
@click.option("--secret", required=True, help="The secret both sites share (16-256 characters).")
@click.option("--tenant", default="default", show_default=True, help="The tenant to pair.")
@setting_option("site", "This site's name, as the server's --site.")
@store_options
def add(name: str, url: str, secret: str, tenant: str, **values: Any) -> None:
    """Pair TENANT with peer site NAME at URL (the same as PUT /v1/peers/NAME)."""
    settings = settings_from(values)
    master = load_or_create_key(settings.data_dir, os.environ, create=settings.embedded)

    async def pair(admin: Admin) -> bool:
        principal = await admin.tenants.operator(tenant)
        return await add_peer(
            admin.engine,
            master,
            principal.tenant_id,
            local_site=settings.site,
            site=name,
            url=url,
            secret=secret,
        )

    created = with_admin(settings, pair)
    click.echo(f"{'paired' if created else 'changed the pairing of'} tenant {tenant} with {name}")
