"""API keys keep a sealed copy of themselves for request signing: `api_keys.sealed_key`.

AWS Signature Version 4 (the EventBridge API) proves a request with an HMAC keyed by the secret,
so the server needs the secret itself, not its digest. The copy is sealed with the process's
secret key (AES-256-GCM, bound to the key's id), like connection credentials; keys created
before this revision, or by a tool without the secret key, have none and cannot sign requests.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("sealed_key", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("sealed_key")
