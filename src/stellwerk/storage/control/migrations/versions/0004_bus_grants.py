"""Grants: a tenant lets another tenant's rules put events on one of its buses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bus_grants",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("grantee_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "bus"],
            ["buses.tenant_id", "buses.name"],
            name="fk_bus_grants_tenant_id_buses",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["grantee_id"],
            ["tenants.id"],
            name="fk_bus_grants_grantee_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "bus", "grantee_id", name="pk_bus_grants"),
    )


def downgrade() -> None:
    op.drop_table("bus_grants")
