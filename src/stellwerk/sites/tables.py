"""The sites capability's own tables, in the control plane's database on their own migration
chain (`sites/migrations`, versioned in `alembic_version_sites`): a tenant's peers (their URL
and the shared secret, sealed), the replication cursors, one per peer and bus, the endpoints,
and how far each peer has routed each bus. Every table is
keyed by `tenant_id` first; times are microseconds since the epoch (`stellwerk.clock.to_us`)."""

from __future__ import annotations

import sqlalchemy as sa

from stellwerk.capability import table_metadata

VERSION_TABLE = "alembic_version_sites"

metadata = table_metadata()

peers = sa.Table(
    "sites_peers",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.Text, nullable=False),  # sealed by a SecretBox, never plain
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # The digest of the keys and buses the peer acknowledged last, and when (`mirror.py`).
    sa.Column("control_digest", sa.String(64), nullable=True),
    sa.Column("control_mirrored_at", sa.BigInteger, nullable=True),
    # Where the pairing stands on the tenant (`mirror.py`): pending, joined, gave-way, conflict.
    sa.Column("tenant_state", sa.String(16), nullable=False, server_default="joined"),
    sa.Column("tenant_detail", sa.Text, nullable=True),
)

cursors = sa.Table(
    "sites_cursors",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("bus", sa.String(64), primary_key=True),
    # The last position of the bus the peer acknowledged, and that event's recorded time.
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("recorded_us", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

endpoints = sa.Table(
    "sites_endpoints",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    # The endpoint as PUT (JSON: primary, secondary, buses, replication, health).
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("active", sa.String(64), nullable=False),
    # The transitions, oldest first (JSON list), at most `MAX_HISTORY`.
    sa.Column("history", sa.Text, nullable=False),
    # False while the peer site has not taken the spec yet (sent again until it has).
    sa.Column("mirrored", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

routed = sa.Table(
    "sites_routed",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("bus", sa.String(64), primary_key=True),
    # The recorded time (on that site) of the last event the peer site has routed: its events
    # recorded before it are delivered, so a standby here moves past their replicas.
    sa.Column("through_us", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
