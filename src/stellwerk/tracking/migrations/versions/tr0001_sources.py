"""Sources: write keys bound to a bus and a kind, with their allowed origins and settings.

Revision ID: tr0001
Revises:
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "tr0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tr_sources",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tenant_name", sa.String(64), nullable=False),
        sa.Column("bus", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("allowed_origins", sa.JSON, nullable=False),
        sa.Column("without_consent", sa.String(16), nullable=False),
        sa.Column("full_ip", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pseudonymise", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_tr_sources"),
        sa.UniqueConstraint("key_id", name="uq_tr_sources_key_id"),
    )
    op.create_table(
        "tr_source_origins",
        sa.Column("origin", sa.String(256), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("origin", "tenant_id", "source", name="pk_tr_source_origins"),
    )
    op.create_index("ix_tr_source_origins_source", "tr_source_origins", ["tenant_id", "source"])


def downgrade() -> None:
    op.drop_index("ix_tr_source_origins_source", table_name="tr_source_origins")
    op.drop_table("tr_source_origins")
    op.drop_table("tr_sources")
