"""images.release/binaries/units: each image's extension-release fields and what it ships.

Revision ID: 0004
Revises: 0003_token_policy (the chain is 0002 → 0003_token_policy → 0004)

Rows published before this revision are filled from the stored images themselves: the
caller (registry.db.migrate) hands a reader in `config.attributes["image_summary"]`
((sha256, name) → ImageSummary or None). Without one (or for an image that cannot be read) the
columns stay NULL, which the API and pages show as "unknown", never as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003_token_policy"
branch_labels = None
depends_on = None

_images = sa.table(
    "images",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("sha256", sa.String),
    sa.column("release", sa.JSON),
    sa.column("binaries", sa.JSON),
    sa.column("units", sa.JSON),
)


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("release", sa.JSON, nullable=True))
        batch.add_column(sa.Column("binaries", sa.JSON, nullable=True))
        batch.add_column(sa.Column("units", sa.JSON, nullable=True))
    reader: Callable[[str, str], Any] | None = context.config.attributes.get("image_summary")
    if reader is None:
        return
    bind = op.get_bind()
    rows = bind.execute(sa.select(_images.c.id, _images.c.sha256, _images.c.name)).all()
    for image_id, sha256, name in rows:
        summary = reader(sha256, name)
        if summary is None:
            continue
        bind.execute(
            _images.update()
            .where(_images.c.id == image_id)
            .values(
                release=dict(summary.release),
                binaries=list(summary.binaries),
                units=list(summary.units),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("units")
        batch.drop_column("binaries")
        batch.drop_column("release")
