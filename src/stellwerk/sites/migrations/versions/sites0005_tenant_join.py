"""Where a pairing stands on the tenant both sites name alike: pending until the first snapshot
settles it, then joined, gave-way (this site's first tenant gave way to the peer's) or
conflict (both hold events of their own: nothing is merged).

Revision ID: sites0005
Revises: sites0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sites0005"
down_revision: str | None = "sites0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Pairings made before this revision were merged by name already: they stay joined.
    with op.batch_alter_table("sites_peers") as batch:
        batch.add_column(
            sa.Column("tenant_state", sa.String(16), nullable=False, server_default="joined")
        )
        batch.add_column(sa.Column("tenant_detail", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites_peers") as batch:
        batch.drop_column("tenant_detail")
        batch.drop_column("tenant_state")
