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
