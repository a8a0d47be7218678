"""Login attempt limits shared by every process of a deployment.

Revision ID: sp0008
Revises: sp0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0008"
down_revision: str | None = "sp0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_login_limits",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("tat", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_sp_login_limits"),
    )
    op.create_index("ix_sp_login_limits_tat", "sp_login_limits", ["tat"])


def downgrade() -> None:
    op.drop_table("sp_login_limits")
