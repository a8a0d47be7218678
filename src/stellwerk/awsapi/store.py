"""The EventBridge API's own records: API destinations, tags and what EventBridge keeps of a
global endpoint, by tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.awsapi.tables import api_destinations, endpoints, tags
from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId


@dataclass(frozen=True, slots=True)
class ApiDestination:
    name: str
    description: str
    connection: str
    endpoint: str
    method: str
    rate: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EndpointExtras:
    """EventBridge's fields of a global endpoint that Stellwerk keeps only to show them."""

    description: str = ""
    health_check: str = ""
    role_arn: str = ""


class AwsStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_destination(self, tenant_id: TenantId, destination: ApiDestination) -> bool:
        """Store a new API destination; False when the name is taken."""
        async with self._engine.begin() as conn:
            where = (api_destinations.c.tenant_id == tenant_id) & (
                api_destinations.c.name == destination.name
            )
            if (await conn.execute(sa.select(api_destinations.c.name).where(where))).first():
                return False
            await conn.execute(
                api_destinations.insert().values(
                    tenant_id=tenant_id,
                    name=destination.name,
                    description=destination.description,
                    connection=destination.connection,
                    endpoint=destination.endpoint,
                    method=destination.method,
                    rate=destination.rate,
                    created_at=to_us(destination.created_at),
                    updated_at=to_us(destination.updated_at),
                )
            )
        return True

    async def update_destination(self, tenant_id: TenantId, destination: ApiDestination) -> bool:
        """Replace an API destination's fields; False when there is none by its name."""
        async with self._engine.begin() as conn:
            done = await conn.execute(
                api_destinations.update()
                .where(
                    (api_destinations.c.tenant_id == tenant_id)
                    & (api_destinations.c.name == destination.name)
                )
                .values(
                    description=destination.description,
                    connection=destination.connection,
                    endpoint=destination.endpoint,
                    method=destination.method,
                    rate=destination.rate,
                    updated_at=to_us(destination.updated_at),
                )
            )
        return bool(done.rowcount)

    async def destination(self, tenant_id: TenantId, name: str) -> ApiDestination | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    api_destinations.select().where(
                        (api_destinations.c.tenant_id == tenant_id)
                        & (api_destinations.c.name == name)
                    )
                )
            ).first()
        return None if row is None else _destination(row)

    async def destinations(self, tenant_id: TenantId) -> list[ApiDestination]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                api_destinations.select()
                .where(api_destinations.c.tenant_id == tenant_id)
                .order_by(api_destinations.c.name)
            )
            return [_destination(row) for row in rows]

    async def delete_destination(self, tenant_id: TenantId, name: str) -> bool:
        async with self._engine.begin() as conn:
            done = await conn.execute(
                api_destinations.delete().where(
                    (api_destinations.c.tenant_id == tenant_id) & (api_destinations.c.name == name)
                )
            )
            await conn.execute(
                tags.delete().where(
                    (tags.c.tenant_id == tenant_id) & tags.c.arn.like(f"%:api-destination/{name}")
                )
            )
        return bool(done.rowcount)

    async def tags(self, tenant_id: TenantId, arn: str) -> dict[str, str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(tags.c.key, tags.c.value)
                .where((tags.c.tenant_id == tenant_id) & (tags.c.arn == arn))
                .order_by(tags.c.key)
            )
            return {row.key: row.value for row in rows}

    async def tag(self, tenant_id: TenantId, arn: str, given: dict[str, str]) -> None:
        async with self._engine.begin() as conn:
            for key, value in given.items():
                where = (tags.c.tenant_id == tenant_id) & (tags.c.arn == arn) & (tags.c.key == key)
                if (await conn.execute(sa.select(tags.c.key).where(where))).first():
                    await conn.execute(tags.update().where(where).values(value=value))
                else:
                    await conn.execute(
                        tags.insert().values(tenant_id=tenant_id, arn=arn, key=key, value=value)
                    )

    async def untag(self, tenant_id: TenantId, arn: str, keys: list[str]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                tags.delete().where(
                    (tags.c.tenant_id == tenant_id) & (tags.c.arn == arn) & tags.c.key.in_(keys)
                )
            )

    async def count_tags(self, tenant_id: TenantId, arn: str) -> int:
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(tags)
                .where((tags.c.tenant_id == tenant_id) & (tags.c.arn == arn))
            )
        return int(found or 0)

    async def put_endpoint_extras(
        self, tenant_id: TenantId, name: str, extras: EndpointExtras
    ) -> None:
        async with self._engine.begin() as conn:
            where = (endpoints.c.tenant_id == tenant_id) & (endpoints.c.name == name)
            values = {
                "description": extras.description,
                "health_check": extras.health_check,
                "role_arn": extras.role_arn,
            }
            if (await conn.execute(sa.select(endpoints.c.name).where(where))).first():
                await conn.execute(endpoints.update().where(where).values(**values))
            else:
                await conn.execute(
                    endpoints.insert().values(tenant_id=tenant_id, name=name, **values)
                )

    async def endpoint_extras(self, tenant_id: TenantId) -> dict[str, EndpointExtras]:
        """Every endpoint's extras of the tenant, by the endpoint's name."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(endpoints.select().where(endpoints.c.tenant_id == tenant_id))
            return {
                str(row.name): EndpointExtras(
                    str(row.description), str(row.health_check), str(row.role_arn)
                )
                for row in rows
            }

    async def delete_endpoint_extras(self, tenant_id: TenantId, name: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                endpoints.delete().where(
                    (endpoints.c.tenant_id == tenant_id) & (endpoints.c.name == name)
                )
            )


def _destination(row: sa.Row[object]) -> ApiDestination:
    return ApiDestination(
        name=str(row.name),
        description=str(row.description),
        connection=str(row.connection),
        endpoint=str(row.endpoint),
        method=str(row.method),
        rate=None if row.rate is None else int(str(row.rate)),
        created_at=from_us(int(str(row.created_at))),
        updated_at=from_us(int(str(row.updated_at))),
    )
