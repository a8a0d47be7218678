"""Tables of the control plane. Every tenant-owned table has `tenant_id` first in its key."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("description", sa.String(256), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # The key sealed with the process's secret key, for request signing (migration 0007).
    sa.Column("sealed_key", sa.Text, nullable=True),
    sa.Index("ix_api_keys_tenant_id", "tenant_id"),
)

buses = sa.Table(
    "buses",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("schema_validation", sa.String(8), nullable=False, server_default="off"),
)

schemas = sa.Table(
    "schemas",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("type", sa.String(256), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

failed_events = sa.Table(
    "failed_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("bus", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(1024), nullable=False),
    sa.Column("source", sa.String(4096), nullable=False),
    sa.Column("type", sa.String(1024), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("errors", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resubmitted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_failed_events_tenant_bus_id", "tenant_id", "bus", "id"),
)

rules = sa.Table(
    "rules",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("bus", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("pattern", sa.Text, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("targets", sa.Text, nullable=False),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # `cloudevents` or `eventbridge`: what the rule's pattern and targets see (migration 0008).
    sa.Column("view", sa.String(16), nullable=False, server_default="cloudevents"),
    # A scheduled rule's `rate(...)` or `cron(...)` (its pattern is JSON null; migration 0009).
    sa.Column("schedule", sa.String(256), nullable=True),
    # `active` or `all`: where the rule routes when its bus is in a global endpoint (0010).
    sa.Column("sites", sa.String(8), nullable=False, server_default="active"),
    # The bus's log end when the rule was last enabled: it routes every event after it (0012).
    sa.Column("enabled_from", sa.BigInteger, nullable=True),
    sa.ForeignKeyConstraint(
        ["tenant_id", "bus"], ["buses.tenant_id", "buses.name"], ondelete="CASCADE"
    ),
)

connections = sa.Table(
    "connections",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

bus_grants = sa.Table(
    "bus_grants",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("bus", sa.String(64), primary_key=True),
    sa.Column(
        "grantee_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant_id", "bus"], ["buses.tenant_id", "buses.name"], ondelete="CASCADE"
    ),
)

# An archive keeps the events of a bus that match its pattern, recorded after `start_position`.
# It is created with the bus's last position then and `taken` false; the archiver that follows
# the bus takes it in before its next batch, raising the start to its own cursor if that is
# further on (see stellwerk.routing.archiver). `uid` names its events in the archive store, so
# that an archive deleted and created again under the same name starts empty.
archives = sa.Table(
    "archives",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("bus", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("uid", sa.String(36), nullable=False, unique=True),
    sa.Column("pattern", sa.Text, nullable=True),
    sa.Column("retention_days", sa.Integer, nullable=False),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("start_position", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("taken", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.ForeignKeyConstraint(
        ["tenant_id", "bus"], ["buses.tenant_id", "buses.name"], ondelete="CASCADE"
    ),
)

# A replay re-sends a time window of an archive to some or all rules of its bus. `rules` is a
# JSON array of rule names, or NULL for every rule of the bus. Its progress cursor lives with
# the deliveries it wrote (the delivery queue), so `replayed` here may lag behind.
replays = sa.Table(
    "replays",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("bus", sa.String(64), nullable=False),
    sa.Column("archive", sa.String(64), nullable=False),
    sa.Column("archive_uid", sa.String(36), nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rules", sa.Text, nullable=True),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("replayed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_replays_state", "state"),
)

# The audit trail of erasures ("delete a person's data"): what was asked, by which key, and
# how many events went from each store. `criterion` is JSON; `counts` JSON once done.
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("bus", sa.String(64), nullable=True),
    sa.Column("criterion", sa.Text, nullable=False),
    sa.Column("suppress", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("counts", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("requested_by", sa.String(16), nullable=True),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_erasures_tenant_id", "tenant_id", "requested_at"),
)

# Events an erasure asked to keep out: an event with this source and id arriving again on the
# bus is answered as accepted and not stored. The key is a SHA-256 of source and id (`key_hash`,
# hex): source and id together may be longer than PostgreSQL allows in an index entry.
suppressed_events = sa.Table(
    "suppressed_events",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("bus", sa.String(64), primary_key=True),
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(4096), nullable=False),
    sa.Column("event_id", sa.String(1024), nullable=False),
    sa.Column("erasure_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# A tenant's quotas, set by the operator (`stellwerk tenants limits`): each column None means
# the server-wide default applies (migration 0011, docs/quotas.md).
tenant_limits = sa.Table(
    "tenant_limits",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("events_per_second", sa.Float, nullable=True),
    sa.Column("requests_per_second", sa.Float, nullable=True),
    sa.Column("buses", sa.Integer, nullable=True),
    sa.Column("rules", sa.Integer, nullable=True),
    sa.Column("target_invocations_per_second", sa.Float, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
