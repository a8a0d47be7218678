"""Per-tenant quotas: `tenant_limits`, one row per tenant with any limit of its own.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_limits",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("events_per_second", sa.Float, nullable=True),
        sa.Column("requests_per_second", sa.Float, nullable=True),
        sa.Column("buses", sa.Integer, nullable=True),
        sa.Column("rules", sa.Integer, nullable=True),
        sa.Column("target_invocations_per_second", sa.Float, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_tenant_limits_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenant_limits"),
    )


def downgrade() -> None:
    op.drop_table("tenant_limits")
