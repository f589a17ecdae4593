"""Near-duplicate search state: file facts, candidate pairs, progress, decisions, saved groups.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

`simsearch duplicates` (issue 13) keeps its work in the database so that it is incremental and
resumable:

- ``duplicate_files``: per image file, what the grouping looks at besides the vector: the
  content sha256 (the exact level), the 64-bit perceptual hash (the check on candidate pairs),
  the EXIF tag count and the date taken (the keeper rule), and the file's device and inode
  (hard links are not duplicates of each other). ``path``, ``bytes`` and ``mtime_ns`` say which
  file was read, so a changed file is read again. ``moved_to`` marks a file that
  ``--move-to`` moved away (and ``--undo`` brought back).
- ``duplicate_searched``: per feature set and image, the radius it was searched with; an image
  searched at radius r need not be searched again for any level up to r.
- ``duplicate_pairs``: candidate pairs (a < b) within the radius, with their exact distance.
- ``duplicate_decisions``: pairs a person said are not duplicates (``--not-duplicate``); object
  ids are global, so a decision holds in every feature set.
- ``duplicate_groups``: the groups of the last run per feature set and level, read by the SQL
  function ``simsearch_duplicates`` for joins.

Rows go with their embeddings and images (ON DELETE CASCADE): a deleted or re-ingested image
leaves no stale pair behind. Independent of migration 0005's tables.
"""

# ruff: noqa: E501  (SQL text reads better unwrapped)

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLES = (
    """
    CREATE TABLE duplicate_files (
        object_id   text PRIMARY KEY REFERENCES images ON DELETE CASCADE,
        path        text NOT NULL,      -- images.path when the file was read
        bytes       bigint,
        mtime_ns    bigint,
        sha256      text,               -- NULL when the file could not be read
        phash       bigint,             -- 64-bit DCT perceptual hash (simsearch.duplicates.phash)
        exif_tags   integer NOT NULL DEFAULT 0,
        taken       timestamptz,        -- EXIF DateTimeOriginal, else the file's mtime
        device      bigint,
        inode       bigint,
        error       text,               -- why the file could not be read
        moved_to    text,               -- set by --move-to, cleared by --undo
        read_at     timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX duplicate_files_sha256 ON duplicate_files (sha256)",
    """
    CREATE TABLE duplicate_searched (
        feature_set_id  integer NOT NULL,
        object_id       text NOT NULL,
        radius          double precision NOT NULL CHECK (radius >= 0),
        capped          boolean NOT NULL DEFAULT false,  -- more neighbours within the radius than asked for
        searched_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (feature_set_id, object_id),
        FOREIGN KEY (feature_set_id, object_id) REFERENCES embeddings ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE duplicate_pairs (
        feature_set_id  integer NOT NULL,
        a               text NOT NULL,
        b               text NOT NULL,
        distance        double precision NOT NULL,
        PRIMARY KEY (feature_set_id, a, b),
        CHECK (a < b),
        FOREIGN KEY (feature_set_id, a) REFERENCES embeddings ON DELETE CASCADE,
        FOREIGN KEY (feature_set_id, b) REFERENCES embeddings ON DELETE CASCADE
    )
    """,
    "CREATE INDEX duplicate_pairs_b ON duplicate_pairs (feature_set_id, b)",
    """
    CREATE TABLE duplicate_decisions (
        a           text NOT NULL REFERENCES images ON DELETE CASCADE,
        b           text NOT NULL REFERENCES images ON DELETE CASCADE,
        decided_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (a, b),
        CHECK (a < b)
    )
    """,
    """
    CREATE TABLE duplicate_groups (
        feature_set_id  integer NOT NULL REFERENCES feature_sets ON DELETE CASCADE,
        level           text NOT NULL,     -- exact, strict, loose, or max:D for --max-distance D
        group_no        integer NOT NULL,
        object_id       text NOT NULL REFERENCES images ON DELETE CASCADE,
        group_level     text NOT NULL,     -- the group's own label: exact when its bytes are identical
        diameter        double precision NOT NULL,
        distance        double precision NOT NULL,   -- to the keeper
        keep            boolean NOT NULL,
        reason          text,
        PRIMARY KEY (feature_set_id, level, object_id)
    )
    """,
)

_FUNCTION = r"""
CREATE FUNCTION simsearch_duplicates(
    feature_set text, level text DEFAULT 'strict', max_distance double precision DEFAULT NULL
) RETURNS TABLE ("group" integer, object_id text, distance double precision, keep boolean)
LANGUAGE plpgsql STABLE AS $fn$
-- The groups the last `simsearch duplicates` run found for this feature set and level (or
-- --max-distance D), one row per member, keepers first in each group. The grouping itself
-- (complete linkage, the perceptual-hash check, the keeper rule) runs in simsearch; this
-- function makes its answer joinable.
#variable_conflict use_column
DECLARE
    fs_id integer;
    wanted text;
BEGIN
    SELECT f.id INTO fs_id FROM feature_sets f WHERE f.name = simsearch_duplicates.feature_set;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'simsearch: no feature set named %',
            quote_literal(coalesce(simsearch_duplicates.feature_set, 'NULL')) USING ERRCODE = '22023';
    END IF;
    IF simsearch_duplicates.max_distance IS NOT NULL THEN
        IF simsearch_duplicates.max_distance < 0 THEN
            RAISE EXCEPTION 'simsearch: expected max_distance >= 0, found %',
                simsearch_duplicates.max_distance USING ERRCODE = '22023';
        END IF;
        wanted := 'max:' || simsearch_duplicates.max_distance::text;
    ELSIF simsearch_duplicates.level IN ('exact', 'strict', 'loose') THEN
        wanted := simsearch_duplicates.level;
    ELSE
        RAISE EXCEPTION 'simsearch: expected level exact, strict or loose, found %',
            quote_literal(coalesce(simsearch_duplicates.level, 'NULL')) USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT g.group_no, g.object_id, g.distance, g.keep FROM duplicate_groups g
        WHERE g.feature_set_id = fs_id AND g.level = wanted
        ORDER BY g.group_no, g.keep DESC, g.distance, g.object_id;
END
$fn$
"""


def upgrade() -> None:
    for statement in _TABLES:
        op.execute(statement)
    op.execute(_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION simsearch_duplicates(text, text, double precision)")
    op.execute(
        "DROP TABLE duplicate_groups, duplicate_decisions, duplicate_pairs, duplicate_searched, "
        "duplicate_files"
    )
