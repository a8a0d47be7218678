"""The latency chart's quarter-hour sums of passing check results, filled from those kept.

Revision ID: sp0007
Revises: sp0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0007"
down_revision: str | None = "sp0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_check_latency",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("check_name", sa.String(64), nullable=False),
        sa.Column("bucket", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("total_ms", sa.Float, nullable=False),
        sa.Column("max_ms", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "check_name", "bucket", name="pk_sp_check_latency"),
    )
    # Integer division in both SQLite and PostgreSQL (the columns are integers).
    op.execute(
        "INSERT INTO sp_check_latency (tenant_id, check_name, bucket, count, total_ms, max_ms) "
        "SELECT tenant_id, check_name, (at / 900000000) * 900000000, COUNT(*), "
        "SUM(latency_ms), MAX(latency_ms) FROM sp_check_results WHERE ok "
        "GROUP BY tenant_id, check_name, (at / 900000000) * 900000000"
    )


def downgrade() -> None:
    op.drop_table("sp_check_latency")
