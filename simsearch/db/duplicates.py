"""The state of ``simsearch duplicates``: file facts, candidate pairs, search progress, the
user's decisions and the groups of the last run (tables of migration 0006).

Candidate pairs are stored as ``a < b``. A search batch's pairs and its progress rows are
written in one transaction, so an interrupted run loses at most the batch it was in.
Reads that may be large are keyset-paginated (``after``), so the caller holds a batch, not
the whole feature set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..errors import NotFound
from .feature_sets import Connection, FeatureSet

_GROUPS_LOCK = 7_411_004  # pg_advisory_xact_lock(key, feature_set_id): one writer of groups


@dataclass(frozen=True)
class FileFacts:
    """What a file tells the grouping besides its vector (a ``duplicate_files`` row)."""

    object_id: str
    path: str
    bytes: int | None
    mtime_ns: int | None
    sha256: str | None
    phash: int | None
    exif_tags: int
    taken: datetime | None
    device: int | None
    inode: int | None
    error: str | None
    moved_to: str | None = None


@dataclass(frozen=True)
class Member:
    """An image as the report shows it: what the images table and the file facts know."""

    object_id: str
    path: str | None
    width: int | None
    height: int | None
    bytes: int | None
    sha256: str | None
    phash: int | None
    exif_tags: int
    taken: datetime | None
    device: int | None
    inode: int | None


# --- file facts --------------------------------------------------------------------------


def files_to_check(
    conn: Connection, fs: FeatureSet, after: str, limit: int
) -> list[tuple[str, str, str | None, int | None, int | None]]:
    """A page of the feature set's images with a recorded path, by object id after ``after``:
    (object id, images.path, the path last read, its bytes, its mtime_ns)."""
    rows = conn.execute(
        """SELECT i.object_id, i.path, f.path, f.bytes, f.mtime_ns
           FROM embeddings e JOIN images i ON i.object_id = e.object_id
           LEFT JOIN duplicate_files f ON f.object_id = e.object_id
           WHERE e.feature_set_id = %s AND i.path IS NOT NULL AND e.object_id > %s
             AND f.moved_to IS NULL
           ORDER BY e.object_id LIMIT %s""",
        [fs.id, after, limit],
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def save_files(conn: Connection, facts: Sequence[FileFacts]) -> None:
    if not facts:
        return
    with conn.transaction():
        conn.execute(
            """INSERT INTO duplicate_files AS d (object_id, path, bytes, mtime_ns, sha256, phash,
                                                 exif_tags, taken, device, inode, error)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[],
                                    %s::text[], %s::bigint[], %s::int[], %s::timestamptz[],
                                    %s::bigint[], %s::bigint[], %s::text[])
               ON CONFLICT (object_id) DO UPDATE SET
                 path = EXCLUDED.path, bytes = EXCLUDED.bytes, mtime_ns = EXCLUDED.mtime_ns,
                 sha256 = EXCLUDED.sha256, phash = EXCLUDED.phash,
                 exif_tags = EXCLUDED.exif_tags, taken = EXCLUDED.taken,
                 device = EXCLUDED.device, inode = EXCLUDED.inode, error = EXCLUDED.error,
                 read_at = now()""",
            [
                [f.object_id for f in facts],
                [f.path for f in facts],
                [f.bytes for f in facts],
                [f.mtime_ns for f in facts],
                [f.sha256 for f in facts],
                [f.phash for f in facts],
                [f.exif_tags for f in facts],
                [f.taken for f in facts],
                [f.device for f in facts],
                [f.inode for f in facts],
                [f.error for f in facts],
            ],
        )


def members(conn: Connection, object_ids: Sequence[str]) -> dict[str, Member]:
    """Object id -> what the report and the keeper rule need, for the ids given."""
    if not object_ids:
        return {}
    rows = conn.execute(
        """SELECT i.object_id, i.path, i.width, i.height, coalesce(f.bytes, i.bytes), f.sha256,
                  f.phash, coalesce(f.exif_tags, 0), f.taken, f.device, f.inode
           FROM images i LEFT JOIN duplicate_files f ON f.object_id = i.object_id
           WHERE i.object_id = ANY(%s)""",
        [list(object_ids)],
    ).fetchall()
    return {row[0]: Member(*row) for row in rows}


def moved_ids(conn: Connection, fs: FeatureSet) -> set[str]:
    """The feature set's images whose files ``--move-to`` moved away."""
    rows = conn.execute(
        """SELECT f.object_id FROM duplicate_files f JOIN embeddings e
             ON e.object_id = f.object_id AND e.feature_set_id = %s
           WHERE f.moved_to IS NOT NULL""",
        [fs.id],
    ).fetchall()
    return {r[0] for r in rows}


def set_moved(conn: Connection, object_id: str, moved_to: str | None) -> None:
    conn.execute(
        "UPDATE duplicate_files SET moved_to = %s WHERE object_id = %s", [moved_to, object_id]
    )


# --- candidate search --------------------------------------------------------------------


def to_search(conn: Connection, fs: FeatureSet, radius: float, after: str, limit: int) -> list[str]:
    """A page of the feature set's images not yet searched at ``radius`` or more."""
    rows = conn.execute(
        """SELECT e.object_id FROM embeddings e
           LEFT JOIN duplicate_searched s
             ON s.feature_set_id = e.feature_set_id AND s.object_id = e.object_id
                AND s.object_id > %s  -- lets the merge join start at the page, not the top
           WHERE e.feature_set_id = %s AND e.object_id > %s
             AND (s.radius IS NULL OR s.radius < %s)
           ORDER BY e.object_id LIMIT %s""",
        [after, fs.id, after, radius, limit],
    ).fetchall()
    return [r[0] for r in rows]


def count_to_search(conn: Connection, fs: FeatureSet, radius: float) -> tuple[int, int]:
    """(images still to search at ``radius``, images in the feature set)."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE s.radius IS NULL OR s.radius < %s), count(*)
           FROM embeddings e LEFT JOIN duplicate_searched s
             ON s.feature_set_id = e.feature_set_id AND s.object_id = e.object_id
           WHERE e.feature_set_id = %s""",
        [radius, fs.id],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def save_search(
    conn: Connection,
    fs: FeatureSet,
    pairs: Sequence[tuple[str, str, float]],
    searched: Sequence[str],
    radius: float,
    capped: Sequence[str],
) -> None:
    """One batch's candidate pairs and its progress, together: both or neither.

    Two batches searched at once find a pair from both sides; rows go in key order, so that
    the two inserts take their locks in one order and wait for each other instead of
    deadlocking.
    """
    ordered = [(a, b, d) if a < b else (b, a, d) for a, b, d in pairs if a != b]
    with conn.transaction():
        if ordered:
            conn.execute(
                """INSERT INTO duplicate_pairs (feature_set_id, a, b, distance)
                   SELECT %s, a, b, max(d) FROM unnest(%s::text[], %s::text[], %s::float8[])
                     AS t(a, b, d) GROUP BY a, b ORDER BY a, b
                   ON CONFLICT (feature_set_id, a, b) DO NOTHING""",
                [fs.id, [p[0] for p in ordered], [p[1] for p in ordered], [p[2] for p in ordered]],
            )
        conn.execute(
            """INSERT INTO duplicate_searched (feature_set_id, object_id, radius, capped)
               SELECT %s, o, %s, o = ANY(%s) FROM unnest(%s::text[]) AS o
               ON CONFLICT (feature_set_id, object_id) DO UPDATE SET
                 radius = greatest(duplicate_searched.radius, EXCLUDED.radius),
                 capped = EXCLUDED.capped, searched_at = now()""",
            [fs.id, radius, list(capped), list(searched)],
        )


def pairs_within(
    conn: Connection, fs: FeatureSet, max_distance: float, batch: int = 10_000
) -> Iterator[tuple[str, str, float]]:
    """Stored candidate pairs within ``max_distance``, streamed (a server-side cursor)."""
    with conn.transaction(), conn.cursor(name="duplicate_pairs") as cursor:
        cursor.itersize = batch
        cursor.execute(
            """SELECT a, b, distance FROM duplicate_pairs
               WHERE feature_set_id = %s AND distance <= %s""",
            [fs.id, max_distance],
        )
        for a, b, distance in cursor:
            yield a, b, float(distance)


def identical_files(conn: Connection, fs: FeatureSet) -> list[tuple[str, str, float]]:
    """Pairs of the feature set's images whose files have the same bytes (sha256), with their
    vectors' distance: the exact level needs no search."""
    rows = conn.execute(
        """SELECT fa.object_id, fb.object_id, (ea.embedding <-> eb.embedding)::float8
           FROM duplicate_files fa
           JOIN duplicate_files fb ON fb.sha256 = fa.sha256 AND fb.object_id > fa.object_id
           JOIN embeddings ea ON ea.feature_set_id = %s AND ea.object_id = fa.object_id
           JOIN embeddings eb ON eb.feature_set_id = %s AND eb.object_id = fb.object_id
           WHERE fa.sha256 IS NOT NULL AND fa.moved_to IS NULL AND fb.moved_to IS NULL""",
        [fs.id, fs.id],
    ).fetchall()
    return [(a, b, float(d)) for a, b, d in rows]


def distances(
    conn: Connection, fs: FeatureSet, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    """Exact distances between the stored vectors of the pairs given (pairs missing a vector
    are left out)."""
    if not pairs:
        return {}
    rows = conn.execute(
        """SELECT t.a, t.b, (ea.embedding <-> eb.embedding)::float8
           FROM unnest(%s::text[], %s::text[]) AS t(a, b)
           JOIN embeddings ea ON ea.feature_set_id = %s AND ea.object_id = t.a
           JOIN embeddings eb ON eb.feature_set_id = %s AND eb.object_id = t.b""",
        [[p[0] for p in pairs], [p[1] for p in pairs], fs.id, fs.id],
    ).fetchall()
    return {(a, b): float(d) for a, b, d in rows}


# --- decisions ---------------------------------------------------------------------------


def add_decision(conn: Connection, first: str, second: str) -> bool:
    """Record that two images are not duplicates; False if it was recorded before."""
    known = {
        r[0]
        for r in conn.execute(
            "SELECT object_id FROM images WHERE object_id = ANY(%s)", [[first, second]]
        ).fetchall()
    }
    for object_id in (first, second):
        if object_id not in known:
            raise NotFound(f"no image with object id {object_id!r}")
    a, b = sorted((first, second))
    row = conn.execute(
        """INSERT INTO duplicate_decisions (a, b) VALUES (%s, %s)
           ON CONFLICT DO NOTHING RETURNING a""",
        [a, b],
    ).fetchone()
    return row is not None


def decisions(conn: Connection) -> set[tuple[str, str]]:
    """Every pair a person said is not a duplicate, as (smaller id, larger id)."""
    return {(a, b) for a, b in conn.execute("SELECT a, b FROM duplicate_decisions").fetchall()}


# --- the last run's groups ---------------------------------------------------------------


@dataclass(frozen=True)
class GroupRow:
    group_no: int
    object_id: str
    group_level: str
    diameter: float
    distance: float
    keep: bool
    reason: str | None


def save_groups(
    conn: Connection, fs: FeatureSet, level: str, max_distance: float | None, rows: list[GroupRow]
) -> None:
    """Replace the stored groups of this feature set and level (``simsearch_duplicates``).

    A --max-distance run is stored under ``max:D`` with D as PostgreSQL prints it, so that the
    SQL function finds it by the same float.
    """
    with conn.transaction():
        # Two runs finishing at once replace the groups one after the other.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_GROUPS_LOCK, fs.id])
        key_row = conn.execute(
            "SELECT CASE WHEN %s::float8 IS NULL THEN %s ELSE 'max:' || %s::float8::text END",
            [max_distance, level, max_distance],
        ).fetchone()
        assert key_row is not None
        key = str(key_row[0])
        conn.execute(
            "DELETE FROM duplicate_groups WHERE feature_set_id = %s AND level = %s", [fs.id, key]
        )
        if rows:
            # COPY: a large collection's last run has tens of thousands of members.
            with conn.cursor().copy(
                """COPY duplicate_groups (feature_set_id, level, group_no, object_id, group_level,
                                          diameter, distance, keep, reason) FROM STDIN"""
            ) as copy:
                for r in rows:
                    copy.write_row(
                        (fs.id, key, r.group_no, r.object_id, r.group_level, r.diameter,
                         r.distance, r.keep, r.reason)
                    )  # fmt: skip


def feature_set_roots(conn: Connection, fs: FeatureSet) -> list[str]:
    """The folders `simsearch index` read this feature set's images from."""
    row = conn.execute("SELECT image_roots FROM feature_sets WHERE id = %s", [fs.id]).fetchone()
    return list(row[0]) if row and row[0] else []
