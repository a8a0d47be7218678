"""Rules say how they see events: `rules.view`, `cloudevents` (as stored) or `eventbridge`
(EventBridge's envelope, for rules made through the EventBridge API).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rules",
        sa.Column("view", sa.String(16), nullable=False, server_default="cloudevents"),
    )


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("view")
