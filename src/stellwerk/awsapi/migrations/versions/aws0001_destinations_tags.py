"""API destinations and tags.

Revision ID: aws0001
Revises:
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "aws0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aws_api_destinations",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(512), nullable=False, server_default=""),
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("rate", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_aws_api_destinations"),
    )
    op.create_table(
        "aws_tags",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("arn", sa.String(1600), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "arn", "key", name="pk_aws_tags"),
    )


def downgrade() -> None:
    op.drop_table("aws_tags")
    op.drop_table("aws_api_destinations")
