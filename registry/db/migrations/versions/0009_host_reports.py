"""host_reports: what managed hosts report after their update runs (issue 21, item 4).

Revision ID: 0009
Revises: 0008

One row per (extension, host): the newest report replaces the previous one, so the table
holds at most one row per host and extension however often hosts report. Nothing existed
before this revision, so there is nothing to backfill.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_reports",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host_id", sa.String(32), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("group", sa.String(32), nullable=True),
        sa.Column("version", sa.String(255), nullable=True),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(120), nullable=True),
        sa.Column("systemd", sa.Integer, nullable=True),
        sa.Column("os_id", sa.String(64), nullable=True),
        sa.Column("os_version_id", sa.String(64), nullable=True),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("host_reports")
