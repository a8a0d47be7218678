"""Running a command through the service layer, against the control plane that a server may be
using at the same time. A refusal becomes a one-line error: a usage error for bad input."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.config import Settings
from stellwerk.secrets import ENV_VAR, SecretBox, SecretKeyError, load_or_create_key
from stellwerk.service import (
    InvalidRequest,
    Keys,
    Quotas,
    ServiceError,
    Tenants,
    ValidationFailed,
)
from stellwerk.storage.control import ControlPlane

T = TypeVar("T")


@dataclass(frozen=True)
class Admin:
    """The facades the command line uses."""

    tenants: Tenants
    keys: Keys
    quotas: Quotas
    engine: AsyncEngine  # the control plane's database, for a capability's own tables


def secret_box(settings: Settings) -> SecretBox | None:
    """The servers' secret key, so that keys made here get the sealed copy that request signing
    needs (docs/eventbridge-api.md): the data directory's key file in embedded mode (made as the
    server would make it), `STELLWERK_SECRET_KEY` in scale-out mode; without that variable there,
    None, and such keys cannot sign requests."""
    if not settings.embedded and not os.environ.get(ENV_VAR):
        return None
    return SecretBox(load_or_create_key(settings.data_dir, os.environ, create=settings.embedded))


def with_admin(settings: Settings, action: Callable[[Admin], Awaitable[T]]) -> T:
    async def run() -> T:
        control = await ControlPlane.open(settings.control_database_url, box=secret_box(settings))
        try:
            admin = Admin(
                tenants=Tenants(control),
                keys=Keys(control),
                quotas=Quotas(control),
                engine=control.engine,
            )
            return await action(admin)
        finally:
            await control.close()

    try:
        return asyncio.run(run())
    except (InvalidRequest, ValidationFailed) as exc:
        raise click.UsageError(exc.message) from None
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
    except SecretKeyError as exc:
        raise click.ClickException(str(exc)) from None
