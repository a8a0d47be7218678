"""Global endpoints.

Revision ID: sites0002
Revises: sites0001
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sites0002"
down_revision: str | None = "sites0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sites_endpoints",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active", sa.String(64), nullable=False),
        sa.Column("history", sa.Text, nullable=False),
        sa.Column("mirrored", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_sites_endpoints"),
    )


def downgrade() -> None:
    op.drop_table("sites_endpoints")
