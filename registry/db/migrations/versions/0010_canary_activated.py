"""rollouts.canary_activated: a canary gate that also waits for activation reports.

Revision ID: 0010
Revises: 0009

Opt-in per rollout (issue 21, item 5): with it, a canary host counts only when it fetched
the image from the registry AND reported it activated. Existing rollouts keep the gate
they were started with (fetches only): the column defaults to false.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a table's columns in place; PostgreSQL just adds it.
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(
            sa.Column("canary_activated", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("canary_activated")
