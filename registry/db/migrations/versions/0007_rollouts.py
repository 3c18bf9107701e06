"""Staged rollouts and the fleet view (issue 21): rollout policies, hosts seen, samples.

Revision ID: 0007
Revises: 0006_audit_guard

`rollouts`: one policy per (extension, channel, version); a version without a row is
released to everybody, as before this revision. `fleet_hosts`: the newest thing each managed
host fetched per extension. `fleet_samples`: hosts per version over time (the chart).
`registry_meta`: the registry-wide rollout key (random, made here once, so every replica
ranks buckets the same way).
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006_audit_guard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(255), primary_key=True),
        sa.Column("percent", sa.Integer, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("halted", sa.Boolean, nullable=False),
        sa.Column("halted_reason", sa.Text, nullable=True),
        sa.Column("canary", sa.Integer, nullable=False),
        sa.Column("canary_done", sa.Boolean, nullable=False),
        # Fixed when the canary phase starts: the buckets it offers the version to.
        sa.Column("canary_buckets", sa.JSON, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("every_seconds", sa.Integer, nullable=True),
        sa.Column("next_step_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_seconds", sa.Integer, nullable=True),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fleet_hosts",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host_id", sa.String(32), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("group", sa.String(32), nullable=True),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("version", sa.String(255), nullable=True),
        sa.Column("version_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "fleet_samples",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("version", sa.String(255), primary_key=True),
        sa.Column("hosts", sa.Integer, nullable=False),
    )
    meta = op.create_table(
        "registry_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(meta, [{"key": "rollout_key", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    for table in ("registry_meta", "fleet_samples", "fleet_hosts", "rollouts"):
        op.drop_table(table)
