"""`stellwerk tenants`: create tenants (with their first keys), list them, set their quotas."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import click
import msgspec

from stellwerk.cli.control import with_admin
from stellwerk.cli.options import settings_from, store_options
from stellwerk.names import InvalidNameError, check_name
from stellwerk.storage.control import LIMIT_FIELDS, TenantLimits


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


class _Rate(click.ParamType[float]):
    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            rate = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number (per second)", param, ctx)
        if not math.isfinite(rate) or rate <= 0:
            self.fail(f"{value!r} must be a number above 0 (per second)", param, ctx)
        return rate


class _Count(click.ParamType[int]):
    name = "count"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            count = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if count < 1:
            self.fail(f"{value!r} must be 1 or more", param, ctx)
        return count


def _flag(limit: str) -> str:
    return "--" + limit.replace("_", "-")


@tenants.command("limits")
@click.argument("name")
@click.option("--events-per-second", type=_Rate(), help="Events the tenant may ingest per second.")
@click.option("--requests-per-second", type=_Rate(), help="API requests per second (any route).")
@click.option("--buses", type=_Count(), help="Buses the tenant may have.")
@click.option("--rules", type=_Count(), help="Rules per bus.")
@click.option(
    "--target-invocations-per-second",
    type=_Rate(),
    help="Invocations per second of each of the tenant's targets (delayed beyond, not dropped).",
)
@click.option(
    "--unset",
    "unset",
    multiple=True,
    type=click.Choice([f.replace("_", "-") for f in LIMIT_FIELDS]),
    help="Back to the server's default for this limit (repeatable).",
)
@click.option("--clear", is_flag=True, help="Every limit back to the server's defaults.")
@click.option("--json", "as_json", is_flag=True, help="Print the limits as JSON.")
@store_options
def limits(
    name: str,
    events_per_second: float | None,
    requests_per_second: float | None,
    buses: int | None,
    rules: int | None,
    target_invocations_per_second: float | None,
    unset: tuple[str, ...],
    clear: bool,
    as_json: bool,
    **values: Any,
) -> None:
    """Show or set the quotas of tenant NAME (without options: show them).

    Running servers apply a change within --key-cache-seconds (5 s by default). A limit not set
    here is the server's default (--tenant-event-rate, --max-buses-per-tenant, ...).
    """
    given = {
        "events_per_second": events_per_second,
        "requests_per_second": requests_per_second,
        "buses": buses,
        "rules": rules,
        "target_invocations_per_second": target_invocations_per_second,
    }
    changes: dict[str, float | None] = {k: v for k, v in given.items() if v is not None}
    cleared = [u.replace("-", "_") for u in unset]
    both = sorted(set(changes) & set(cleared))
    if both:
        raise click.UsageError(f"{_flag(both[0])} is both set and unset")
    if clear and (changes or cleared):
        raise click.UsageError("--clear clears every limit: give no other limit with it")
    changes.update(dict.fromkeys(cleared))
    settings = settings_from(values)
    if clear:
        result = with_admin(settings, lambda admin: admin.quotas.clear(name))
    elif changes:
        result = with_admin(settings, lambda admin: admin.quotas.update(name, changes))
    else:
        result = with_admin(settings, lambda admin: admin.quotas.show(name))
    _show(name, result, as_json)


def _show(name: str, result: TenantLimits, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode({"tenant": name, **dataclasses.asdict(result)}).decode())
        return
    click.echo(f"tenant: {name}")
    for limit in LIMIT_FIELDS:
        value = getattr(result, limit)
        shown = "server default" if value is None else f"{value:g}"
        click.echo(f"{limit.replace('_', '-')}: {shown}")
