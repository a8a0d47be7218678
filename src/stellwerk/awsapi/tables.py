"""The EventBridge API's own tables, in the control plane's database but on their own migration
chain (`awsapi/migrations`, versioned in `alembic_version_awsapi`): what EventBridge has and the
native API does not. API destinations (an endpoint, a method, a rate and a connection, which
`PutTargets` turns into an `http` target) and tags. Every table is keyed by `tenant_id` first;
times are microseconds since the epoch (`stellwerk.clock.to_us`)."""

from __future__ import annotations

import sqlalchemy as sa

from stellwerk.capability import table_metadata

VERSION_TABLE = "alembic_version_awsapi"

metadata = table_metadata()

api_destinations = sa.Table(
    "aws_api_destinations",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("connection", sa.String(64), nullable=False),
    sa.Column("endpoint", sa.String(2048), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("rate", sa.Integer, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

tags = sa.Table(
    "aws_tags",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("arn", sa.String(1600), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

# What EventBridge keeps of a global endpoint beyond what the sites capability keeps: its
# description, the health check's and the role's ARNs (shown back, not acted on here).
endpoints = sa.Table(
    "aws_endpoints",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(512), nullable=False, server_default=""),
    sa.Column("health_check", sa.String(1600), nullable=False),
    sa.Column("role_arn", sa.String(1600), nullable=False, server_default=""),
)
