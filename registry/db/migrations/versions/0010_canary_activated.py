"""rollouts.canary_activated and host_activations: a canary gate that also waits for
activation reports.

Revision ID: 0010
Revises: 0009

Opt-in per rollout (issue 21, item 5): with it, a canary host counts only when it fetched
the image from the registry AND reported it activated. Existing rollouts keep the gate
they were started with (fetches only): the column defaults to false. host_activations
keeps every (extension, host, version) reported activated, insert-only, because
host_reports keeps only each host's newest report (its next run reports `unchanged`).
Activations reported before this revision are not backfilled beyond what host_reports
still shows as the newest report.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_activations",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host_id", sa.String(32), primary_key=True),
        sa.Column("version", sa.String(255), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # Hosts whose newest report is an activation: the one trace of earlier ones.
    op.execute(
        "INSERT INTO host_activations (name, host_id, version, at) SELECT name, host_id, "
        "version, at FROM host_reports WHERE result = 'activated' AND version IS NOT NULL"
    )
    # batch mode: SQLite cannot ALTER a table's columns in place; PostgreSQL just adds it.
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(
            sa.Column("canary_activated", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    op.drop_table("host_activations")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("canary_activated")
