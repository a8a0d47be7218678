"""What a peer has of the tenant's keys and buses.

Revision ID: sites0003
Revises: sites0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sites0003"
down_revision: str | None = "sites0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sites_peers") as batch:
        batch.add_column(sa.Column("control_digest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("control_mirrored_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites_peers") as batch:
        batch.drop_column("control_mirrored_at")
        batch.drop_column("control_digest")
