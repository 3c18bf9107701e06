"""images.verity_root_hash, images.verity_signer: what a signed verity DDI carries.

Revision ID: 0008
Revises: 0007

Every image published before this revision is a plain squashfs or erofs image (the
registry accepted nothing else), so NULL is their true value: no backfill.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("verity_root_hash", sa.String(128), nullable=True))
    op.add_column("images", sa.Column("verity_signer", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("verity_signer")
        batch.drop_column("verity_root_hash")
