"""Synthetic checks and their results.

Revision ID: sp0005
Revises: sp0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0005"
down_revision: str | None = "sp0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_checks",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("interval_seconds", sa.Float, nullable=False),
        sa.Column("timeout_seconds", sa.Float, nullable=False),
        sa.Column("expect_status", sa.JSON, nullable=False),
        sa.Column("expect_body", sa.String(1000), nullable=True),
        sa.Column("latency_threshold_ms", sa.Integer, nullable=True),
        sa.Column("failures_to_open", sa.Integer, nullable=False),
        sa.Column("page", sa.String(64), nullable=True),
        sa.Column("component", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("last_run_at", sa.BigInteger, nullable=True),
        sa.Column("last_latency_ms", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_sp_checks"),
    )
    op.create_table(
        "sp_check_results",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("check_name", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_sp_check_results"),
    )
    op.create_index(
        "ix_sp_check_results_check", "sp_check_results", ["tenant_id", "check_name", "at"]
    )
    op.create_index("ix_sp_check_results_at", "sp_check_results", ["at"])


def downgrade() -> None:
    op.drop_table("sp_check_results")
    op.drop_table("sp_checks")
