"""Pages, their domains, components and their status history, incidents and their updates.

Revision ID: sp0001
Revises:
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_pages",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("visibility", sa.String(16), nullable=False, server_default="public"),
        sa.Column("branding", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_sp_pages"),
        sa.UniqueConstraint("name", name="uq_sp_pages_name"),
    )
    op.create_table(
        "sp_domains",
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("host", name="pk_sp_domains"),
    )
    op.create_index("ix_sp_domains_page", "sp_domains", ["tenant_id", "page"])
    op.create_table(
        "sp_components",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("group_name", sa.String(200), nullable=True),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("only_show_if_degraded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "page", "id", name="pk_sp_components"),
    )
    op.create_table(
        "sp_status_history",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_sp_status_history"),
    )
    op.create_index(
        "ix_sp_status_history_component",
        "sp_status_history",
        ["tenant_id", "page", "component", "at"],
    )
    op.create_table(
        "sp_incidents",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("impact", sa.String(16), nullable=False),
        sa.Column("components", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("resolved_at", sa.BigInteger, nullable=True),
        sa.Column("scheduled_for", sa.BigInteger, nullable=True),
        sa.Column("scheduled_until", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "page", "id", name="pk_sp_incidents"),
    )
    op.create_index("ix_sp_incidents_created", "sp_incidents", ["tenant_id", "page", "created_at"])
    op.create_index("ix_sp_incidents_due", "sp_incidents", ["status", "scheduled_for"])
    op.create_table(
        "sp_incident_updates",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("incident", sa.String(32), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("affected", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "page", "incident", "id", name="pk_sp_incident_updates"
        ),
    )


def downgrade() -> None:
    op.drop_table("sp_incident_updates")
    op.drop_table("sp_incidents")
    op.drop_table("sp_status_history")
    op.drop_table("sp_components")
    op.drop_table("sp_domains")
    op.drop_table("sp_pages")
