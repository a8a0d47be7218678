"""How far a peer site has routed each bus, for the site that stands by for it.

Revision ID: sites0004
Revises: sites0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sites0004"
down_revision: str | None = "sites0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sites_routed",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("through_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "site", "bus", name="pk_sites_routed"),
    )


def downgrade() -> None:
    op.drop_table("sites_routed")
