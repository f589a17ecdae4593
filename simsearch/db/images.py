"""Images: their files (path, size, dimensions), metadata, image folders, and deleting them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import sql

from ..gallery import ImageRecord
from .feature_sets import SEQUENTIAL, Connection, FeatureSet


def upsert_images(conn: Connection, records: Sequence[ImageRecord]) -> tuple[int, int]:
    """Insert or update image rows by object id: (matched, added).

    A record's None fields leave the stored values as they are, and its meta is merged into the
    stored meta key by key: `simsearch index` sets every file column, `meta import` what it has.
    """
    if not records:
        return 0, 0
    with conn.transaction():
        # `simsearch index` writes the ledger (a reference table on Citus) in the same
        # transaction, after this: one connection per node from the start.
        conn.execute(SEQUENTIAL)
        flags = conn.execute(
            """INSERT INTO images AS i (object_id, path, bytes, width, height, meta)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::int[], %s::int[],
                                    %s::jsonb[])
               ON CONFLICT (object_id) DO UPDATE SET
                 path = coalesce(EXCLUDED.path, i.path),
                 bytes = coalesce(EXCLUDED.bytes, i.bytes),
                 width = coalesce(EXCLUDED.width, i.width),
                 height = coalesce(EXCLUDED.height, i.height),
                 meta = i.meta || EXCLUDED.meta
               RETURNING (xmax = 0)""",
            [
                [r.object_id for r in records],
                [r.path for r in records],
                [r.bytes for r in records],
                [r.width for r in records],
                [r.height for r in records],
                [json.dumps(r.meta) for r in records],
            ],
        ).fetchall()
        dated = [(r.object_id, r.added_at) for r in records if r.added_at is not None]
        if dated:
            conn.execute(
                """UPDATE images i SET added_at = t.a
                   FROM unnest(%s::text[], %s::timestamptz[]) AS t(o, a) WHERE i.object_id = t.o""",
                [[o for o, _ in dated], [a for _, a in dated]],
            )
    added = sum(1 for (inserted,) in flags if inserted)
    return len(flags) - added, added


def image_records(conn: Connection, object_ids: Sequence[str]) -> dict[str, ImageRecord]:
    """Object id -> what the images table knows of its file, for the ids it holds."""
    if not object_ids:
        return {}
    rows = conn.execute(
        "SELECT object_id, path, bytes, width, height FROM images WHERE object_id = ANY(%s)",
        [list(object_ids)],
        prepare=True,
    ).fetchall()
    return {row[0]: ImageRecord(*row) for row in rows}


def add_image_root(conn: Connection, fs: FeatureSet, root: str) -> None:
    """Record the absolute folder that images.path values of this feature set are relative to."""
    conn.execute(
        """UPDATE feature_sets SET image_roots = array_append(image_roots, %s)
           WHERE id = %s AND NOT (%s = ANY(image_roots))""",
        [root, fs.id, root],
    )


def image_roots(conn: Connection) -> list[str]:
    """Every image folder recorded by `simsearch index`, oldest first."""
    rows = conn.execute(
        """SELECT root FROM (SELECT DISTINCT ON (root) root, id, pos
                             FROM feature_sets, unnest(image_roots) WITH ORDINALITY AS r(root, pos)
                             ORDER BY root, id, pos) AS roots
           ORDER BY id, pos"""
    ).fetchall()
    return [row[0] for row in rows]


# --- files by folder (image_files, migration 0005) ------------------------------------------


def record_files(conn: Connection, root: str, files: Sequence[ImageRecord]) -> None:
    """Record that folder ``root`` holds these files (record.path relative to it), each under
    its object id; a path that now holds other bytes is moved to its new object id."""
    if not files:
        return
    conn.execute(
        """INSERT INTO image_files AS f (root, path, object_id, bytes)
           SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::bigint[])
           ON CONFLICT (root, path) DO UPDATE SET
             object_id = EXCLUDED.object_id, bytes = EXCLUDED.bytes, indexed_at = now()
           WHERE (f.object_id, f.bytes) IS DISTINCT FROM (EXCLUDED.object_id, EXCLUDED.bytes)""",
        [root, [r.path for r in files], [r.object_id for r in files], [r.bytes for r in files]],
    )


def recorded_files(conn: Connection, root: str) -> dict[str, str]:
    """Relative path -> object id of every file recorded under folder ``root``."""
    rows = conn.execute(
        "SELECT path, object_id FROM image_files WHERE root = %s", [root]
    ).fetchall()
    return {path: object_id for path, object_id in rows}


def forget_files(conn: Connection, root: str, paths: Sequence[str]) -> list[str]:
    """Forget files of folder ``root``; the object ids they held."""
    rows = conn.execute(
        "DELETE FROM image_files WHERE root = %s AND path = ANY(%s) RETURNING object_id",
        [root, list(paths)],
    ).fetchall()
    ids = list(dict.fromkeys(row[0] for row in rows))
    _repoint_paths(conn, ids)
    return ids


def unheld(conn: Connection, fs: FeatureSet) -> list[str]:
    """The feature set's object ids that no recorded file in its folders holds (files gone,
    or rewritten in place with other bytes)."""
    rows = conn.execute(
        """SELECT e.object_id FROM embeddings e
           WHERE e.feature_set_id = %s AND NOT EXISTS (
             SELECT 1 FROM image_files f JOIN feature_sets s ON f.root = ANY(s.image_roots)
             WHERE s.id = e.feature_set_id AND f.object_id = e.object_id)""",
        [fs.id],
    ).fetchall()
    return [row[0] for row in rows]


def forget_unrecorded_roots(conn: Connection) -> int:
    """Forget the files of folders no feature set records any more (after a drop): files gone."""
    # The folders read first, then the delete by value: on Citus a write to the coordinator's
    # image_files may not read the (reference) feature_sets table in the same statement.
    recorded = image_roots(conn)
    rows = conn.execute(
        "DELETE FROM image_files WHERE NOT (root = ANY(%s)) RETURNING object_id", [recorded]
    ).fetchall()
    _repoint_paths(conn, list(dict.fromkeys(row[0] for row in rows)))
    return len(rows)


def _repoint_paths(conn: Connection, object_ids: list[str]) -> None:
    """images.path (one of an image's paths, kept for existing SQL) to a file still recorded,
    where the one it held is no longer among them.

    Read first, then written by value: on Citus ``images`` is distributed and ``image_files``
    stays on the coordinator, and an UPDATE may not join the two.
    """
    if not object_ids:
        return
    files: dict[str, list[str]] = {}
    for object_id, path in conn.execute(
        """SELECT object_id, path FROM image_files WHERE object_id = ANY(%s)
           ORDER BY object_id, indexed_at DESC, root""",
        [object_ids],
    ).fetchall():
        files.setdefault(object_id, []).append(path)
    current = dict(
        conn.execute(
            "SELECT object_id, path FROM images WHERE object_id = ANY(%s)", [list(files)]
        ).fetchall()
    )
    moved = {o: paths[0] for o, paths in files.items() if current.get(o) not in paths}
    if moved:
        conn.execute(
            """UPDATE images i SET path = t.path FROM unnest(%s::text[], %s::text[]) AS t(o, path)
               WHERE i.object_id = t.o""",
            [list(moved), list(moved.values())],
        )


def files_of(conn: Connection, object_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Object id -> its recorded files as (folder, relative path), newest first; an absolute
    images.path (one ``meta import`` set) as ("", path)."""
    if not object_ids:
        return {}
    rows = conn.execute(
        """SELECT object_id, root, path FROM (
             SELECT object_id, root, path, indexed_at FROM image_files WHERE object_id = ANY(%s)
             UNION ALL
             SELECT object_id, '', path, added_at FROM images
             WHERE object_id = ANY(%s) AND path LIKE '/%%') AS t
           ORDER BY object_id, indexed_at DESC, root""",
        [list(object_ids), list(object_ids)],
        prepare=True,
    ).fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for object_id, root, path in rows:
        found.setdefault(object_id, []).append((root, path))
    return found


def has_meta_key(conn: Connection, key: str) -> bool:
    """Whether some image's metadata has ``key`` (a scan: asked only when a filter found
    too little, to tell a mistyped key from a rare value)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM images WHERE meta ? %s)", [key]).fetchone()
    return bool(row and row[0])


def meta_keys(conn: Connection, limit: int = 20) -> list[str]:
    """The first ``limit`` keys images' metadata holds, sorted (for messages)."""
    rows = conn.execute(
        """SELECT DISTINCT k FROM images, jsonb_object_keys(meta) AS k ORDER BY k LIMIT %s""",
        [limit],
    ).fetchall()
    return [row[0] for row in rows]


@dataclass
class DeleteReport:
    embeddings: int = 0
    images: int = 0
    missing: list[str] = field(default_factory=list)


def delete_objects(
    conn: Connection, object_ids: Sequence[str], fs: FeatureSet | None
) -> DeleteReport:
    """Delete ids from one feature set (their image rows stay), or entirely (fs None).

    The ledger keeps what the shard files held (rows, sha256) and counts deletions in
    ``shards.deleted``: re-ingesting unchanged files skips the shard, so nothing deleted
    comes back unless asked for with ``ingest --replace``.
    """
    ids = list(dict.fromkeys(object_ids))
    report = DeleteReport()
    with conn.transaction():
        conn.execute(SEQUENTIAL)  # the ledger (a reference table on Citus) changes too
        scope = sql.SQL("AND feature_set_id = {}").format(sql.Literal(fs.id)) if fs else sql.SQL("")
        row = conn.execute(
            sql.SQL(
                """WITH gone AS (
                     DELETE FROM embeddings WHERE object_id = ANY(%s) {scope}
                     RETURNING shard_id),
                   counted AS (
                     UPDATE shards s SET deleted = s.deleted + g.n
                     FROM (SELECT shard_id, count(*) AS n FROM gone GROUP BY shard_id) g
                     WHERE s.id = g.shard_id)
                   SELECT count(*) FROM gone"""
            ).format(scope=scope),
            [ids],
        ).fetchone()
        report.embeddings = int(row[0]) if row else 0
        if fs is None:
            found = conn.execute(
                "DELETE FROM images WHERE object_id = ANY(%s) RETURNING object_id", [ids]
            ).fetchall()
            report.images = len(found)
            present = {r[0] for r in found}
        else:
            # Which ids were there: in the feature set (deleted now) or at least in images.
            present = {
                r[0]
                for r in conn.execute(
                    "SELECT object_id FROM images WHERE object_id = ANY(%s)", [ids]
                ).fetchall()
            }
        report.missing = [i for i in ids if i not in present]
    return report
