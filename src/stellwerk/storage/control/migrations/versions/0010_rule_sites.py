"""Rules say where they route when their bus is in a global endpoint: `rules.sites`, `active`
(the endpoint's active site only) or `all` (every site, standing by or not).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rules",
        sa.Column("sites", sa.String(8), nullable=False, server_default="active"),
    )


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("sites")
