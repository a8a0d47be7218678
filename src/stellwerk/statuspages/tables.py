"""The status pages' tables, in the control plane's database but on their own migration chain
(`statuspages/migrations`, versioned in `alembic_version_statuspages`).

Every table is keyed by `tenant_id` first. Times are whole microseconds since the epoch
(`stellwerk.clock.to_us`), which compare and index the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

from stellwerk.capability import table_metadata

VERSION_TABLE = "alembic_version_statuspages"

metadata = table_metadata()

pages = sa.Table(
    "sp_pages",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("visibility", sa.String(16), nullable=False, server_default="public"),
    sa.Column("branding", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # Public addresses are /status/{page}: a page's name is unique across tenants.
    sa.UniqueConstraint("name", name="uq_sp_pages_name"),
)

# A custom host name belongs to one page of one tenant, across all tenants.
domains = sa.Table(
    "sp_domains",
    metadata,
    sa.Column("host", sa.String(253), primary_key=True),
    sa.Column("tenant_id", sa.String(36), nullable=False),
    sa.Column("page", sa.String(64), nullable=False),
    sa.Index("ix_sp_domains_page", "tenant_id", "page"),
)

components = sa.Table(
    "sp_components",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("group_name", sa.String(200), nullable=True),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    sa.Column("only_show_if_degraded", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Every status a component took, from `at` on: what uptime is computed from.
status_history = sa.Table(
    "sp_status_history",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("tenant_id", sa.String(36), nullable=False),
    sa.Column("page", sa.String(64), nullable=False),
    sa.Column("component", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_sp_status_history_component", "tenant_id", "page", "component", "at"),
)

# Incidents and scheduled maintenance (impact `maintenance`), as Statuspage keeps them.
incidents = sa.Table(
    "sp_incidents",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("impact", sa.String(16), nullable=False),
    sa.Column("components", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Column("scheduled_for", sa.BigInteger, nullable=True),
    sa.Column("scheduled_until", sa.BigInteger, nullable=True),
    # Maintenance: each component's status before it began, given back when it completes
    # (sp0002).
    sa.Column("held", sa.JSON, nullable=True),
    sa.Index("ix_sp_incidents_created", "tenant_id", "page", "created_at"),
    sa.Index("ix_sp_incidents_due", "status", "scheduled_for"),
)

incident_updates = sa.Table(
    "sp_incident_updates",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("incident", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("affected", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Synthetic checks (checks.py) and their results, the latency chart's data.
checks = sa.Table(
    "sp_checks",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("interval_seconds", sa.Float, nullable=False),
    sa.Column("timeout_seconds", sa.Float, nullable=False),
    sa.Column("expect_status", sa.JSON, nullable=False),
    sa.Column("expect_body", sa.String(1000), nullable=True),
    sa.Column("latency_threshold_ms", sa.Integer, nullable=True),
    sa.Column("failures_to_open", sa.Integer, nullable=False),
    sa.Column("page", sa.String(64), nullable=True),
    sa.Column("component", sa.String(64), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("last_run_at", sa.BigInteger, nullable=True),
    sa.Column("last_latency_ms", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

check_results = sa.Table(
    "sp_check_results",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("tenant_id", sa.String(36), nullable=False),
    sa.Column("check_name", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_sp_check_results_check", "tenant_id", "check_name", "at"),
    sa.Index("ix_sp_check_results_at", "at"),
)

# The latency chart's data: each check's passing results summed per quarter hour (UTC), so a
# page's 90 days are at most 8,640 rows a check to read instead of 130,000 (migration sp0007).
check_latency = sa.Table(
    "sp_check_latency",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("check_name", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),  # the quarter hour's start, µs
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("total_ms", sa.Float, nullable=False),
    sa.Column("max_ms", sa.Float, nullable=False),
)

# The incidents the `status` rule target opened, by the key its events name them with (an
# Alertmanager group key, say): the open incident a later event of the same key updates.
incident_keys = sa.Table(
    "sp_incident_keys",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("incident", sa.String(32), nullable=False),
)

# The content updater's position on each tenant's internal bus (cache.py, updater.py): every
# invalidation after it is still to be rendered into L2.
cache_cursors = sa.Table(
    "sp_cache_cursors",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Who may read a private or an audience page (access.py). `audience` "" is the page's own login
# (a private page); any other is an audience of an audience page, with the components it sees.
# `epoch` grows when the password changes: sessions made with an older one end.
access = sa.Table(
    "sp_access",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("audience", sa.String(64), primary_key=True),
    sa.Column("components", sa.JSON, nullable=True),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Login attempts, shared by every process (attempts.py): per key (a page, or a page and a
# client address), when its bucket is full again (µs). Keys full again are swept away.
login_limits = sa.Table(
    "sp_login_limits",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("tat", sa.BigInteger, nullable=False),
    sa.Index("ix_sp_login_limits_tat", "tat"),
)

# Signed access links an admin made; the token carries the id, so a link can be revoked.
access_links = sa.Table(
    "sp_access_links",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("audience", sa.String(64), nullable=False, server_default=""),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

# Email and webhook subscribers (subscribers.py). An email address gets notices once confirmed;
# a webhook subscriber is a rule (`rule`) on the tenant's internal bus.
subscribers = sa.Table(
    "sp_subscribers",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("page", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("address", sa.String(2000), nullable=False),
    sa.Column("components", sa.JSON, nullable=False),
    sa.Column("audience", sa.String(64), nullable=False, server_default=""),
    sa.Column("rule", sa.String(64), nullable=True),
    sa.Column("origin", sa.String(300), nullable=False),  # the site its links point to
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("confirmed_at", sa.BigInteger, nullable=True),
    sa.Index("ix_sp_subscribers_address", "tenant_id", "page", "kind", "address", unique=True),
)

# How far the notifier has read each tenant's internal bus.
notice_cursors = sa.Table(
    "sp_notice_cursors",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

# Mails to send (an outbox): written with the cursor's move in one transaction, so a crash loses
# none; one row per subscriber and event, so a crash repeats at most the mail being sent.
notices = sa.Table(
    "sp_notices",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
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
    sa.Index("ix_sp_notices_event", "tenant_id", "subscriber", "event_id", unique=True),
    sa.Index("ix_sp_notices_due", "sent_at", "next_attempt_at"),
)
