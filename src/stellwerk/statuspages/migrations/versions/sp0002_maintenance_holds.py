"""Scheduled maintenance remembers the statuses its components had before it began
(`sp_incidents.held`), to give them back when it completes.

Revision ID: sp0002
Revises: sp0001
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0002"
down_revision: str | None = "sp0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sp_incidents", sa.Column("held", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sp_incidents") as batch:
        batch.drop_column("held")
