"""The incidents the `status` rule target opened, by their events' key.

Revision ID: sp0006
Revises: sp0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0006"
down_revision: str | None = "sp0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_incident_keys",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("incident", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "page", "key", name="pk_sp_incident_keys"),
    )


def downgrade() -> None:
    op.drop_table("sp_incident_keys")
