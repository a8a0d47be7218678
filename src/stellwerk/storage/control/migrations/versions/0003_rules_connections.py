"""Rules with their targets, and connections (authorization for HTTP targets).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("pattern", sa.Text, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("description", sa.String(512), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "bus"],
            ["buses.tenant_id", "buses.name"],
            name="fk_rules_tenant_id_buses",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "bus", "name", name="pk_rules"),
    )
    op.create_table(
        "connections",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_connections_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_connections"),
    )


def downgrade() -> None:
    op.drop_table("connections")
    op.drop_table("rules")
