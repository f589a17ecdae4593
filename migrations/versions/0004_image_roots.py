"""The folders `simsearch index` read images from, so the server can find the files.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

images.path is relative to the folder it was indexed from (portable when the folder moves);
feature_sets.image_roots records that folder as an absolute path, one entry per folder indexed
into the feature set. `simsearch serve` serves an image only from a recorded path under one of
these roots (or a root given with --image-root), never from a path in a request.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE feature_sets ADD COLUMN image_roots text[] NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    op.execute("ALTER TABLE feature_sets DROP COLUMN image_roots")
