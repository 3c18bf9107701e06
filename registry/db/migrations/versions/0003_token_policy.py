"""tokens.expires_at and tokens.channels: tokens that fit a release process (issue 13).

Revision ID: 0003_token_policy
Revises: 0002

`expires_at` NULL: the token never expires; `channels` NULL: every channel (so tokens made
before this revision keep exactly the rights they had).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_token_policy"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("channels", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite cannot drop a column in place before 3.35: batch mode copies the table.
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("channels")
        batch.drop_column("expires_at")
