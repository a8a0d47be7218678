"""Rules keep where their bus's log ended when they were enabled: `rules.enabled_from`, so that
a router that passed over a bus without rules lazily starts the first rule there, never later
(docs/routing.md). NULL: not known (saved before this, or without the log at hand).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rules", sa.Column("enabled_from", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("enabled_from")
