"""Running a command against the control plane that a server may be using at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from stellwerk.config import Settings
from stellwerk.storage.control import ControlPlane

T = TypeVar("T")


def with_control(settings: Settings, action: Callable[[ControlPlane], Awaitable[T]]) -> T:
    async def run() -> T:
        control = await ControlPlane.open(settings.control_database_url)
        try:
            return await action(control)
        finally:
            await control.close()

    return asyncio.run(run())


async def tenant_id(control: ControlPlane, name: str) -> str:
    tenant = await control.get_tenant(name)
    if tenant is None:
        raise click.ClickException(f"tenant {name!r} does not exist")
    return tenant.id
