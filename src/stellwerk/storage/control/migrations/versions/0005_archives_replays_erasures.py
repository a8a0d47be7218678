"""Archives, replays, erasures and the events erasures keep out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "archives",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("pattern", sa.Text, nullable=True),
        sa.Column("retention_days", sa.Integer, nullable=False),
        sa.Column("description", sa.String(512), nullable=False, server_default=""),
        sa.Column("start_position", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "bus"],
            ["buses.tenant_id", "buses.name"],
            name="fk_archives_tenant_id_buses",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "bus", "name", name="pk_archives"),
        sa.UniqueConstraint("uid", name="uq_archives_uid"),
    )
    op.create_table(
        "replays",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("archive", sa.String(64), nullable=False),
        sa.Column("archive_uid", sa.String(36), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rules", sa.Text, nullable=True),
        sa.Column("description", sa.String(512), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("replayed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_replays_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_replays"),
    )
    op.create_index("ix_replays_state", "replays", ["state"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("bus", sa.String(64), nullable=True),
        sa.Column("criterion", sa.Text, nullable=False),
        sa.Column("suppress", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("counts", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("requested_by", sa.String(16), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_erasures_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )
    op.create_index("ix_erasures_tenant_id", "erasures", ["tenant_id", "requested_at"])
    op.create_table(
        "suppressed_events",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(4096), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("erasure_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_suppressed_events_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "bus", "key_hash", name="pk_suppressed_events"),
    )


def downgrade() -> None:
    op.drop_table("suppressed_events")
    op.drop_index("ix_erasures_tenant_id", table_name="erasures")
    op.drop_table("erasures")
    op.drop_index("ix_replays_state", table_name="replays")
    op.drop_table("replays")
    op.drop_table("archives")
