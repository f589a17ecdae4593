"""Image files by folder; filtered searches with k above hnsw.ef_search's range answer exactly.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

``images.path`` held one relative path per image, whichever folder indexed it last: indexing a
second folder that holds a copy of a file moved the image's only path there, and once that
folder was dropped or moved away the image's file could not be found, although the first folder
still held it. ``image_files`` records every file by the folder that holds it: ``(root, path)``
is a file, ``object_id`` what it holds, ``file`` its absolute path. The same image in two
folders has two rows; dropping a feature set forgets the rows of folders no other feature set
records, and ``simsearch index --prune`` the rows of files that are gone.

``images.path`` stays (one of the image's paths, relative to its folder) so that existing SQL
keeps working; to find an image's files, join ``image_files USING (object_id)``.

Rows are filled from what 0004 recorded: an image's relative path under each folder recorded by a
feature set that holds the image. Where several folders were indexed into one feature set, that
is a candidate per folder; simsearch serves and prints only files that exist, and ``simsearch
index`` of a folder corrects its rows.

``simsearch_knn`` (0002) set ``hnsw.ef_search`` to at least k, which pgvector refuses above
1000 (an ERROR in the server's log, and a failed filtered search); k above that range now scans
exactly, as ``simsearch query`` does, and ef_search is kept within 1..1000.
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search


def _knn_0002() -> str:
    """simsearch_knn as migration 0002 created it (its text, to amend and to restore)."""
    path = Path(__file__).with_name("0002_sql_surface.py")
    spec = importlib.util.spec_from_file_location("simsearch_migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module._KNN)


_FROM = (
    "    IF indexed AND NOT exact AND has_filter THEN\n",
    "PERFORM set_config('hnsw.ef_search', greatest(old_ef::integer, pool)::text, true);",
)
_TO = (
    # An HNSW scan yields at most ef_search rows, and ef_search stops at 1000.
    f"    IF k > {EF_SEARCH_MAX} THEN\n        exact := true;\n    END IF;\n" + _FROM[0],
    "PERFORM set_config('hnsw.ef_search', "
    f"least(greatest(old_ef::integer, pool), {EF_SEARCH_MAX})::text, true);",
)


def _knn_0005() -> str:
    text = _knn_0002()
    for old, new in zip(_FROM, _TO, strict=True):
        assert text.count(old) == 1, f"migration 0005: simsearch_knn no longer holds {old!r}"
        text = text.replace(old, new)
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE image_files (
            root        text NOT NULL,  -- the folder `simsearch index` read, absolute
            path        text NOT NULL,  -- relative to root, with forward slashes
            object_id   text NOT NULL REFERENCES images ON DELETE CASCADE,
            bytes       bigint,
            indexed_at  timestamptz NOT NULL DEFAULT now(),
            file        text GENERATED ALWAYS AS (rtrim(root, '/') || '/' || path) STORED,
            PRIMARY KEY (root, path)
        )
        """
    )
    op.execute("CREATE INDEX image_files_object_id ON image_files (object_id)")
    op.execute(
        """
        INSERT INTO image_files (root, path, object_id, bytes)
        SELECT DISTINCT r.root, i.path, i.object_id, i.bytes
        FROM images i
        JOIN embeddings e ON e.object_id = i.object_id
        JOIN feature_sets f ON f.id = e.feature_set_id
        CROSS JOIN LATERAL unnest(f.image_roots) AS r(root)
        WHERE i.path IS NOT NULL AND i.path NOT LIKE '/%'
        ON CONFLICT DO NOTHING
        """
    )
    op.execute(_knn_0005())


def downgrade() -> None:
    op.execute(_knn_0002().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP TABLE image_files")
