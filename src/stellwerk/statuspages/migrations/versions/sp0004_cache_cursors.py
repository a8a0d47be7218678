"""The content updater's cursor per tenant: where on the internal bus it has rendered up to.

Revision ID: sp0004
Revises: sp0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0004"
down_revision: str | None = "sp0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_cache_cursors",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_sp_cache_cursors"),
    )


def downgrade() -> None:
    op.drop_table("sp_cache_cursors")
