"""All of simsearch's SQL, over a psycopg connection with pgvector registered.

Identifiers that cannot be bound as parameters (a feature set's id in a partial index's
predicate, a vector dimension in a cast) are integers read from our own tables and composed
with ``psycopg.sql.Literal``; every value that comes from the user is a bound parameter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from . import pgcopy
from .errors import FeatureSetError, ShardError
from .gallery import ImageRecord
from .scan import Match
from .shards import Shard

Connection = psycopg.Connection[Any]
_INGEST_LOCK = 7_411_002  # pg_advisory_xact_lock(key, feature_set_id): one loader per feature set
_INDEX_LOCK = 7_411_003  # pg_advisory_xact_lock(key, feature_set_id): one index build at a time
HNSW_MAX_HALFVEC_DIMENSION = 4000  # pgvector's limit for indexing halfvec


@dataclass(frozen=True)
class FeatureSet:
    id: int
    name: str
    dimension: int
    model: str | None
    model_sha256: str | None
    preprocess: dict[str, Any]
    index_params: dict[str, Any] | None
    indexed: bool  # a valid ANN index exists

    @property
    def index_name(self) -> str:
        return f"embeddings_hnsw_{self.id}"


@dataclass(frozen=True)
class FeatureSetStatus:
    feature_set: FeatureSet
    rows: int
    shards: int
    index_bytes: int | None


_FEATURE_SET_COLUMNS = sql.SQL(
    """f.id, f.name, f.dimension, f.model, f.model_sha256, f.preprocess, f.index_params,
       COALESCE((SELECT i.indisvalid FROM pg_index i
                 WHERE i.indexrelid = to_regclass('embeddings_hnsw_' || f.id)), false)"""
)


def feature_sets(conn: Connection) -> list[FeatureSet]:
    query = sql.SQL("SELECT {} FROM feature_sets f ORDER BY f.name").format(_FEATURE_SET_COLUMNS)
    return [FeatureSet(*row) for row in conn.execute(query).fetchall()]


def feature_set(conn: Connection, name: str) -> FeatureSet | None:
    query = sql.SQL("SELECT {} FROM feature_sets f WHERE f.name = %s").format(_FEATURE_SET_COLUMNS)
    row = conn.execute(query, [name]).fetchone()
    return None if row is None else FeatureSet(*row)


def create_feature_set(
    conn: Connection,
    name: str,
    dimension: int,
    model: str | None,
    model_sha256: str | None,
    preprocess: dict[str, Any],
) -> FeatureSet:
    with conn.transaction():
        conn.execute(
            """INSERT INTO feature_sets (name, dimension, model, model_sha256, preprocess)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING""",
            [name, dimension, model, model_sha256, json.dumps(preprocess)],
        )
    found = feature_set(conn, name)
    assert found is not None
    return found


def set_model(
    conn: Connection, fs: FeatureSet, model: str, model_sha256: str, preprocess: dict[str, Any]
) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE feature_sets SET model = %s, model_sha256 = %s, preprocess = %s WHERE id = %s",
            [model, model_sha256, json.dumps(preprocess), fs.id],
        )


def loaded_shards(conn: Connection, fs: FeatureSet) -> dict[str, str]:
    """The ledger: shard name -> sha256 of what was loaded."""
    rows = conn.execute(
        "SELECT name, sha256 FROM shards WHERE feature_set_id = %s", [fs.id]
    ).fetchall()
    conn.commit()
    return dict(rows)


def load_shard(conn: Connection, fs: FeatureSet, shard: Shard, replace: bool) -> str:
    """Store one shard and its ledger row in one transaction: 'loaded', 'replaced' or 'skipped'."""
    with conn.transaction():
        # Serialise loaders of one feature set, so two ingests of a directory never interleave.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_INGEST_LOCK, fs.id])
        # A crash may lose the last shards committed, but with their ledger rows (same
        # transaction), so a re-run loads them again; not waiting for each WAL flush is safe.
        conn.execute("SET LOCAL synchronous_commit = off")
        previous = conn.execute(
            "SELECT id, sha256 FROM shards WHERE feature_set_id = %s AND name = %s",
            [fs.id, shard.name],
        ).fetchone()
        outcome = "loaded"
        if previous is not None:
            if previous[1] == shard.sha256:
                return "skipped"
            if not replace:
                raise ShardError(
                    f"shard {shard.name}: its files changed since they were loaded into "
                    f"{fs.name!r}; use --replace to load the new contents"
                )
            conn.execute("DELETE FROM shards WHERE id = %s", [previous[0]])  # cascades to rows
            outcome = "replaced"
        refuse_stored_ids(conn, fs, shard)
        shard_id = conn.execute(
            """INSERT INTO shards (feature_set_id, name, sha256, rows)
               VALUES (%s, %s, %s, %s) RETURNING id""",
            [fs.id, shard.name, shard.sha256, shard.rows],
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO images (object_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            [shard.object_ids],
        )
        data = pgcopy.embedding_rows(fs.id, shard_id, shard.object_ids, shard.features)
        with conn.cursor().copy(
            "COPY embeddings (feature_set_id, object_id, shard_id, embedding)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(data)
    return outcome


def refuse_stored_ids(conn: Connection, fs: FeatureSet, shard: Shard) -> None:
    """Raise ShardError if any of the shard's ids is already stored in the feature set."""
    clash = conn.execute(
        """SELECT e.object_id, s.name FROM embeddings e LEFT JOIN shards s ON s.id = e.shard_id
           WHERE e.feature_set_id = %s AND e.object_id = ANY(%s)
             AND s.name IS DISTINCT FROM %s  -- a shard being replaced may keep its own ids
           LIMIT 1""",
        [fs.id, shard.object_ids, shard.name],
    ).fetchone()
    if clash is not None:
        where = f"shard {clash[1]}" if clash[1] else "an earlier load"
        raise ShardError(
            f"shard {shard.name}: object id {clash[0]!r} is already stored in {fs.name!r} "
            f"from {where}; expected ids unique across shards"
        )


def upsert_images(conn: Connection, records: Sequence[ImageRecord]) -> None:
    """Each image's relative path, file size and dimensions; newer values win."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO images (object_id, path, bytes, width, height)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::int[], %s::int[])
               ON CONFLICT (object_id) DO UPDATE SET path = EXCLUDED.path,
                   bytes = EXCLUDED.bytes, width = EXCLUDED.width, height = EXCLUDED.height""",
            [
                [r.object_id for r in records],
                [r.path for r in records],
                [r.bytes for r in records],
                [r.width for r in records],
                [r.height for r in records],
            ],
        )


def object_ids(conn: Connection, fs: FeatureSet) -> set[str]:
    """Every object id the feature set holds a vector for."""
    rows = conn.execute(
        "SELECT object_id FROM embeddings WHERE feature_set_id = %s", [fs.id]
    ).fetchall()
    conn.commit()
    return {row[0] for row in rows}


def image_paths(conn: Connection, object_ids: Sequence[str]) -> dict[str, str]:
    """object id -> the relative path stored for it, for the ids that have one."""
    rows = conn.execute(
        "SELECT object_id, path FROM images WHERE object_id = ANY(%s) AND path IS NOT NULL",
        [list(object_ids)],
    ).fetchall()
    conn.commit()
    return dict(rows)


def add_image_root(conn: Connection, fs: FeatureSet, root: str) -> None:
    """Record the absolute folder that images.path values of this feature set are relative to."""
    with conn.transaction():
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
    conn.commit()
    return [row[0] for row in rows]


def analyze(conn: Connection) -> None:
    with conn.transaction():
        conn.execute("ANALYZE embeddings")


def check_query(fs: FeatureSet, query: np.ndarray) -> None:
    """Refuse a query vector of another dimension than the feature set's, in plain words."""
    if query.shape != (fs.dimension,):
        raise FeatureSetError(
            f"the query vector has dimension {query.shape[-1]}; "
            f"feature set {fs.name!r} holds dimension {fs.dimension}"
        )


def knn(
    conn: Connection,
    fs: FeatureSet,
    query: np.ndarray,
    n: int,
    exact: bool = False,
    ef_search: int = 200,  # search.DEFAULT_EF_SEARCH
    candidates: int = 100,
) -> list[Match]:
    """The n stored vectors nearest to ``query``: exact scan, or ANN index plus exact re-rank."""
    check_query(fs, query)
    with conn.transaction():
        if exact or not fs.indexed:
            # No index may answer an exact query, whatever indexes a user has added.
            conn.execute("SET LOCAL enable_indexscan = off")
            rows = conn.execute(
                """SELECT object_id, embedding <-> %s AS distance FROM embeddings
                   WHERE feature_set_id = %s ORDER BY distance, object_id LIMIT %s""",
                [query, fs.id, n],
                prepare=True,
            ).fetchall()
        else:
            # An HNSW scan yields at most ef_search rows, so the candidates re-ranked are capped
            # by it: ef_search is the one recall knob (--ef), candidates only trims the re-rank.
            ef = max(ef_search, n)
            pool = max(min(candidates, ef), n)
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef)])
            rows = conn.execute(_ann_query(fs), [query, query, pool, n], prepare=True).fetchall()
    return [Match(object_id, float(distance)) for object_id, distance in rows]


def _ann_query(fs: FeatureSet) -> sql.Composed:
    # The HNSW index is partial (one per feature set) on a halfvec expression: the predicate
    # and the cast must appear literally for the planner to match it. Candidates found at
    # half precision are re-ranked by the exact float32 distance.
    return sql.SQL(
        """SELECT object_id, distance FROM (
             SELECT object_id, embedding <-> %s AS distance FROM (
               SELECT object_id, embedding FROM embeddings
               WHERE feature_set_id = {fs_id}
               ORDER BY embedding::halfvec({dim}) <-> %s::halfvec({dim})
               LIMIT %s
             ) AS candidates
           ) AS ranked
           ORDER BY distance, object_id LIMIT %s"""
    ).format(fs_id=sql.Literal(fs.id), dim=sql.Literal(fs.dimension))


def build_index(
    conn: Connection, fs: FeatureSet, m: int, ef_construction: int, if_missing: bool = False
) -> bool:
    """(Re)build the feature set's HNSW index on half-precision vectors; False if ``if_missing``
    and another process built it meanwhile (two ingests finishing at once)."""
    if fs.dimension > HNSW_MAX_HALFVEC_DIMENSION:
        raise FeatureSetError(
            f"feature set {fs.name!r} has dimension {fs.dimension}; pgvector indexes at most "
            f"{HNSW_MAX_HALFVEC_DIMENSION} (queries stay exact)"
        )
    name = sql.Identifier(fs.index_name)
    with conn.transaction():
        # Two builds at once would collide on the index's name in pg_class: one waits.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_INDEX_LOCK, fs.id])
        if if_missing:
            valid = conn.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                [fs.index_name],
            ).fetchone()
            if valid is not None and valid[0]:
                return False
        rows = conn.execute(
            "SELECT count(*) FROM embeddings WHERE feature_set_id = %s", [fs.id]
        ).fetchone()
        memory = build_memory_mb(int(rows[0]) if rows else 0, fs.dimension, m)
        conn.execute(
            sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{memory}MB"))
        )
        conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                """CREATE INDEX {name} ON embeddings
                   USING hnsw ((embedding::halfvec({dim})) halfvec_l2_ops)
                   WITH (m = {m}, ef_construction = {efc})
                   WHERE feature_set_id = {fs_id}"""
            ).format(
                name=name,
                dim=sql.Literal(fs.dimension),
                m=sql.Literal(m),
                efc=sql.Literal(ef_construction),
                fs_id=sql.Literal(fs.id),
            )
        )
        params = {
            "type": "hnsw",
            "opclass": "halfvec_l2_ops",
            "m": m,
            "ef_construction": ef_construction,
        }
        conn.execute(
            "UPDATE feature_sets SET index_params = %s WHERE id = %s", [json.dumps(params), fs.id]
        )
    return True


def build_memory_mb(rows: int, dimension: int, m: int) -> int:
    """maintenance_work_mem for an HNSW build: enough to hold the whole graph, so that it is
    built in memory (pgvector's on-disk build is many times slower), within a quarter of RAM.

    Per row the graph holds the half-precision vector and about 2m neighbour links; the
    factor matches the 391 MiB measured for 100,000 x 1280 at m=16.
    """
    graph = rows * (2 * dimension + 32 * m + 256) * 1.25 / 2**20
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return int(max(2048, min(graph * 1.1, ram // 4)))


def drop_index(conn: Connection, fs: FeatureSet) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(fs.index_name)))
        conn.execute("UPDATE feature_sets SET index_params = NULL WHERE id = %s", [fs.id])


def row_count(conn: Connection, fs: FeatureSet) -> int:
    row = conn.execute(
        "SELECT count(*) FROM embeddings WHERE feature_set_id = %s", [fs.id]
    ).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def sample_vectors(conn: Connection, fs: FeatureSet, count: int, seed: int = 0) -> list[np.ndarray]:
    """Up to ``count`` stored vectors: the same ones for the same seed (ordered by id hash)."""
    rows = conn.execute(
        """SELECT embedding FROM embeddings WHERE feature_set_id = %s AND object_id IN (
               SELECT object_id FROM embeddings WHERE feature_set_id = %s
               ORDER BY md5(object_id || %s), object_id LIMIT %s)
           ORDER BY md5(object_id || %s), object_id""",
        [fs.id, fs.id, str(seed), count, str(seed)],
    ).fetchall()
    conn.commit()
    return [np.asarray(row[0].to_numpy(), np.float32) for row in rows]


def status(conn: Connection) -> list[FeatureSetStatus]:
    result = []
    for fs in feature_sets(conn):
        row = conn.execute(
            """SELECT (SELECT count(*) FROM embeddings WHERE feature_set_id = %s),
                      (SELECT count(*) FROM shards WHERE feature_set_id = %s),
                      pg_relation_size(to_regclass(%s))""",
            [fs.id, fs.id, fs.index_name],
        ).fetchone()
        assert row is not None
        result.append(FeatureSetStatus(fs, int(row[0]), int(row[1]), row[2]))
    conn.commit()
    return result


def server_version(conn: Connection) -> tuple[str, str | None]:
    row = conn.execute(
        """SELECT current_setting('server_version'),
                  (SELECT extversion FROM pg_extension WHERE extname = 'vector')"""
    ).fetchone()
    conn.commit()
    assert row is not None
    return str(row[0]), row[1]


def empty_database(conn: Connection) -> None:
    """Remove every feature set, image, shard and ANN index (tests and benchmarks, which run
    in a SIMSEARCH_HOME of their own)."""
    with conn.transaction():
        names = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'embeddings_hnsw_%'"
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute("TRUNCATE feature_sets, images, shards, embeddings RESTART IDENTITY CASCADE")
