"""Schema registry, per-bus validation mode and the failed-events store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("buses") as batch:
        batch.add_column(
            sa.Column("schema_validation", sa.String(8), server_default="off", nullable=False)
        )
    op.create_table(
        "schemas",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("description", sa.String(512), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_schemas_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "type", "version", name="pk_schemas"),
    )
    op.create_table(
        "failed_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("source", sa.String(4096), nullable=False),
        sa.Column("type", sa.String(1024), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("errors", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resubmitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_failed_events_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_failed_events"),
    )
    op.create_index("ix_failed_events_tenant_bus_id", "failed_events", ["tenant_id", "bus", "id"])


def downgrade() -> None:
    op.drop_index("ix_failed_events_tenant_bus_id", table_name="failed_events")
    op.drop_table("failed_events")
    op.drop_table("schemas")
    with op.batch_alter_table("buses") as batch:
        batch.drop_column("schema_validation")
