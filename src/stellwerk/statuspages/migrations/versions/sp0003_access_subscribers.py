"""Private and audience pages (logins, access links), subscribers and their notices.

Revision ID: sp0003
Revises: sp0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sp0003"
down_revision: str | None = "sp0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sp_access",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("audience", sa.String(64), nullable=False),
        sa.Column("components", sa.JSON, nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "page", "audience", name="pk_sp_access"),
    )
    op.create_table(
        "sp_access_links",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("audience", sa.String(64), nullable=False, server_default=""),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "page", "id", name="pk_sp_access_links"),
    )
    op.create_table(
        "sp_subscribers",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("address", sa.String(2000), nullable=False),
        sa.Column("components", sa.JSON, nullable=False),
        sa.Column("audience", sa.String(64), nullable=False, server_default=""),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("confirmed_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "page", "id", name="pk_sp_subscribers"),
    )
    op.create_index(
        "ix_sp_subscribers_address",
        "sp_subscribers",
        ["tenant_id", "page", "kind", "address"],
        unique=True,
    )
    op.create_table(
        "sp_notice_cursors",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_sp_notice_cursors"),
    )
    op.create_table(
        "sp_notices",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("page", sa.String(64), nullable=False),
        sa.Column("subscriber", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("sent_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_sp_notices"),
    )
    op.create_index(
        "ix_sp_notices_event", "sp_notices", ["tenant_id", "subscriber", "event_id"], unique=True
    )
    op.create_index("ix_sp_notices_due", "sp_notices", ["sent_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("sp_notices")
    op.drop_table("sp_notice_cursors")
    op.drop_table("sp_subscribers")
    op.drop_table("sp_access_links")
    op.drop_table("sp_access")
