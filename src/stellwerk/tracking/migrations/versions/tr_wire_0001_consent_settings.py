"""Sources: consent purposes, internal hosts and TCF purpose names (trackwire).

A branch from tr0001, so that the tracking helpers' migrations do not depend on each other;
`Database.migrate` upgrades to "heads".

Revision ID: tr_wire_0001
Revises: tr0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "tr_wire_0001"
down_revision: str | None = "tr0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tr_sources") as batch:
        batch.add_column(sa.Column("consent_purposes", sa.JSON, nullable=True))
        batch.add_column(sa.Column("internal_hosts", sa.JSON, nullable=True))
        batch.add_column(sa.Column("tcf_purposes", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tr_sources") as batch:
        batch.drop_column("tcf_purposes")
        batch.drop_column("internal_hosts")
        batch.drop_column("consent_purposes")
