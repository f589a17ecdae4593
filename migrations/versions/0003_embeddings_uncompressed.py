"""Store embeddings that fit in a page uncompressed: about three times faster bulk loads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

With STORAGE MAIN and the default toast_tuple_target (about 2 KB), every 1280-d row (5 KB)
went through pglz before being stored: on 100,000 clustered, non-negative vectors the binary
COPY took 41 s instead of 12 s, and every exact scan and re-rank paid decompression. Raising
toast_tuple_target to its maximum (8160) means rows that fit in a page are never compressed
or moved; larger vectors (over about 2,000 dimensions) still go through TOAST as before
(STORAGE MAIN stays). Rows already stored keep their form until rewritten (VACUUM FULL).
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE embeddings SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.execute("ALTER TABLE embeddings RESET (toast_tuple_target)")
