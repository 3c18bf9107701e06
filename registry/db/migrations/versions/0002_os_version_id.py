"""images.os_version_id: the VERSION_ID an OS-bound image is built for (NULL: any OS).

Revision ID: 0002
Revises: 0001

Images published before this revision keep NULL, so their extensions stay served with the
plain NAME-@v-%a.raw pattern they were served with until now.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("os_version_id", sa.String(255), nullable=True))


def downgrade() -> None:
    # SQLite cannot drop a column in place before 3.35: batch mode copies the table.
    with op.batch_alter_table("images") as batch:
        batch.drop_column("os_version_id")
