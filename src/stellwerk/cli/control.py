"""Running a command through the service layer, against the control plane that a server may be
using at the same time. A refusal becomes a one-line error: a usage error for bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import click

from stellwerk.config import Settings
from stellwerk.service import InvalidRequest, Keys, ServiceError, Tenants, ValidationFailed
from stellwerk.storage.control import ControlPlane

T = TypeVar("T")


@dataclass(frozen=True)
class Admin:
    """The facades the command line uses."""

    tenants: Tenants
    keys: Keys


def with_admin(settings: Settings, action: Callable[[Admin], Awaitable[T]]) -> T:
    async def run() -> T:
        control = await ControlPlane.open(settings.control_database_url)
        try:
            return await action(Admin(tenants=Tenants(control), keys=Keys(control)))
        finally:
            await control.close()

    try:
        return asyncio.run(run())
    except (InvalidRequest, ValidationFailed) as exc:
        raise click.UsageError(exc.message) from None
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
