"""What EventBridge keeps of a global endpoint: description, health check and role ARNs.

Revision ID: aws0002
Revises: aws0001
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "aws0002"
down_revision: str | None = "aws0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aws_endpoints",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(512), nullable=False, server_default=""),
        sa.Column("health_check", sa.String(1600), nullable=False),
        sa.Column("role_arn", sa.String(1600), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_aws_endpoints"),
    )


def downgrade() -> None:
    op.drop_table("aws_endpoints")
