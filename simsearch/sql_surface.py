"""SQL for filtered and by-id queries, image metadata, and deleting rows or feature sets.

Filtered queries go through the ``simsearch_knn`` function that migration 0002 creates, so
the CLI and SQL users share one implementation (strategy choice, iterative index scan,
exact fallback). Every value the user supplies is a bound parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb

from .errors import InputError
from .scan import Match
from .store import Connection, FeatureSet, check_query


def knn_filtered(
    conn: Connection,
    fs: FeatureSet,
    query: np.ndarray,
    n: int,
    where: Mapping[str, Any] | None,
    exact: bool = False,
    ef_search: int = 100,
    exclude: str | None = None,
) -> list[Match]:
    """The n nearest rows passing ``where`` (the JSON filter), via ``simsearch_knn``."""
    check_query(fs, query)
    with conn.transaction():
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        rows = conn.execute(
            "SELECT object_id, distance FROM simsearch_knn(%s, %s, %s, %s, %s, %s)",
            [fs.name, query, n, Jsonb(where or {}), exact, exclude],
        ).fetchall()
    return [Match(object_id, float(distance)) for object_id, distance in rows]


def stored_vector(conn: Connection, fs: FeatureSet, object_id: str) -> np.ndarray:
    row = conn.execute(
        "SELECT embedding FROM embeddings WHERE feature_set_id = %s AND object_id = %s",
        [fs.id, object_id],
    ).fetchone()
    conn.commit()
    if row is None:
        raise InputError(f"feature set {fs.name!r} has no object id {object_id!r}")
    return np.asarray(row[0].to_numpy(), np.float32)


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


def drop_feature_set(conn: Connection, fs: FeatureSet) -> int:
    """Delete a feature set, its ledger, its rows and its index; image rows stay."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(fs.index_name)))
        row = conn.execute(
            "SELECT count(*) FROM embeddings WHERE feature_set_id = %s", [fs.id]
        ).fetchone()
        conn.execute("DELETE FROM feature_sets WHERE id = %s", [fs.id])  # cascades
    return int(row[0]) if row else 0


@dataclass
class ImageRow:
    """One metadata record: known columns (None = leave as is) and the rest for meta."""

    object_id: str
    path: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    added_at: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def upsert_images(conn: Connection, rows: Sequence[ImageRow]) -> tuple[int, int]:
    """Insert or update image rows by object id: (matched, added). meta is merged key by key."""
    if not rows:
        return 0, 0
    ids = [r.object_id for r in rows]
    with conn.transaction():
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
                ids,
                [r.path for r in rows],
                [r.bytes for r in rows],
                [r.width for r in rows],
                [r.height for r in rows],
                [json.dumps(r.meta) for r in rows],
            ],
        ).fetchall()
        dated = [(r.object_id, r.added_at) for r in rows if r.added_at is not None]
        if dated:
            conn.execute(
                """UPDATE images i SET added_at = t.a
                   FROM unnest(%s::text[], %s::timestamptz[]) AS t(o, a) WHERE i.object_id = t.o""",
                [[o for o, _ in dated], [a for _, a in dated]],
            )
    added = sum(1 for (inserted,) in flags if inserted)
    return len(flags) - added, added
