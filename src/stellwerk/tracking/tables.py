"""The tracking capability's tables, in the control plane's database but on their own migration
chain (`tracking/migrations`, versioned in `alembic_version_tracking`).

Sources are keyed by `tenant_id` first. A write key is found by its public id (`key_id`, unique
across tenants) and checked against its SHA-256 digest; the key itself is never stored. Allowed
origins are also kept one per row, so that a CORS preflight, which carries no write key, can ask
whether any source allows an origin without reading every source. Times are whole microseconds
since the epoch (`stellwerk.clock.to_us`).
"""

from __future__ import annotations

import sqlalchemy as sa

from stellwerk.capability import table_metadata

VERSION_TABLE = "alembic_version_tracking"

metadata = table_metadata()

sources = sa.Table(
    "tr_sources",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    # The tenant's name, which the event log keys by: a source's events are taken without
    # asking the control plane who the tenant is.
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
    # tr_wire_0001: consent and referrer settings; NULL (sources made before) means none.
    sa.Column("consent_purposes", sa.JSON, nullable=True),
    sa.Column("internal_hosts", sa.JSON, nullable=True),
    sa.Column("tcf_purposes", sa.JSON, nullable=True),
    sa.UniqueConstraint("key_id", name="uq_tr_sources_key_id"),
)

source_origins = sa.Table(
    "tr_source_origins",
    metadata,
    sa.Column("origin", sa.String(256), primary_key=True),
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Index("ix_tr_source_origins_source", "tenant_id", "source"),
)
