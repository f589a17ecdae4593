"""Feature sets: creating, finding, describing, emptying and dropping them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from ..errors import FeatureSetError

Connection = psycopg.Connection[Any]

# On Citus, a transaction that writes a reference table (feature_sets, shards) and touches a
# distributed table referring to it must use one connection per node (simsearch.db.citus).
SEQUENTIAL = "SET LOCAL citus.multi_shard_modify_mode = 'sequential'"


@dataclass(frozen=True)
class FeatureSet:
    id: int
    name: str
    dimension: int
    model: str | None
    model_sha256: str | None
    preprocess: dict[str, Any]
    index_params: dict[str, Any] | None
    indexed: bool  # a valid HNSW index exists

    @property
    def index_name(self) -> str:
        return f"embeddings_hnsw_{self.id}"

    @property
    def reduced(self) -> int | None:
        """The dimension of the PCA copy the HNSW index is built on; None: the full vectors."""
        value = (self.index_params or {}).get("reduced") if self.indexed else None
        return None if value is None else int(value)


@dataclass(frozen=True)
class FeatureSetStatus:
    feature_set: FeatureSet
    rows: int
    shards: int
    index_bytes: int | None


_COLUMNS = sql.SQL(
    """f.id, f.name, f.dimension, f.model, f.model_sha256, f.preprocess, f.index_params,
       COALESCE((SELECT i.indisvalid FROM pg_index i
                 WHERE i.indexrelid = to_regclass('embeddings_hnsw_' || f.id)), false)"""
)


def feature_sets(conn: Connection) -> list[FeatureSet]:
    query = sql.SQL("SELECT {} FROM feature_sets f ORDER BY f.name").format(_COLUMNS)
    return [FeatureSet(*row) for row in conn.execute(query).fetchall()]


def feature_set(conn: Connection, name: str) -> FeatureSet | None:
    """The feature set named ``name``, or None."""
    query = sql.SQL("SELECT {} FROM feature_sets f WHERE f.name = %s").format(_COLUMNS)
    row = conn.execute(query, [name]).fetchone()
    return None if row is None else FeatureSet(*row)


def resolve(conn: Connection, name: str | None) -> FeatureSet:
    """The named feature set, or the only one there is; FeatureSetError says what exists."""
    return choose(feature_sets(conn), name)


def choose(sets: Sequence[FeatureSet], name: str | None) -> FeatureSet:
    """``resolve`` over a list already read."""
    if name is not None:
        for fs in sets:
            if fs.name == name:
                return fs
        known = ", ".join(repr(fs.name) for fs in sets) or "none yet"
        raise FeatureSetError(f"no feature set named {name!r}; the database has {known}")
    if not sets:
        raise FeatureSetError(
            "the database has no feature sets yet; run `simsearch index PHOTO_DIR` (a folder of "
            "photos) or `simsearch ingest FEATURE_DIR` (.npy shards) first"
        )
    if len(sets) > 1:
        names = ", ".join(repr(fs.name) for fs in sets)
        raise FeatureSetError(f"several feature sets ({names}); choose one with --feature-set")
    return sets[0]


def create(
    conn: Connection,
    name: str,
    dimension: int,
    model: str | None,
    model_sha256: str | None,
    preprocess: dict[str, Any],
) -> FeatureSet:
    """The feature set ``name``, created unless another process created it meanwhile."""
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
    conn.execute(
        "UPDATE feature_sets SET model = %s, model_sha256 = %s, preprocess = %s WHERE id = %s",
        [model, model_sha256, json.dumps(preprocess), fs.id],
    )


def row_count(conn: Connection, fs: FeatureSet) -> int:
    row = conn.execute(
        "SELECT count(*) FROM embeddings WHERE feature_set_id = %s", [fs.id]
    ).fetchone()
    return int(row[0]) if row else 0


def object_ids(conn: Connection, fs: FeatureSet) -> set[str]:
    """Every object id the feature set holds a vector for."""
    rows = conn.execute(
        "SELECT object_id FROM embeddings WHERE feature_set_id = %s", [fs.id]
    ).fetchall()
    return {row[0] for row in rows}


def sample_vectors(conn: Connection, fs: FeatureSet, count: int, seed: int = 0) -> list[np.ndarray]:
    """Up to ``count`` stored vectors: the same ones for the same seed (ordered by id hash)."""
    return sample_rows(conn, fs, count, seed)[1]


def sample_rows(
    conn: Connection, fs: FeatureSet, count: int, seed: int = 0
) -> tuple[list[str], list[np.ndarray]]:
    """Up to ``count`` stored rows' ids and vectors, the same ones for the same seed."""
    rows = conn.execute(
        """SELECT object_id, embedding FROM embeddings
           WHERE feature_set_id = %s AND object_id IN (
               SELECT object_id FROM embeddings WHERE feature_set_id = %s
               ORDER BY md5(object_id || %s), object_id LIMIT %s)
           ORDER BY md5(object_id || %s), object_id""",
        [fs.id, fs.id, str(seed), count, str(seed)],
    ).fetchall()
    return [row[0] for row in rows], [np.asarray(row[1].to_numpy(), np.float32) for row in rows]


def analyze(conn: Connection) -> None:
    conn.execute("ANALYZE embeddings")


def status(conn: Connection) -> list[FeatureSetStatus]:
    result = []
    # On Citus the coordinator's index is an empty shell; the shards' indexes hold the graph.
    size = sql.SQL("citus_relation_size" if distributed(conn) else "pg_relation_size")
    for fs in feature_sets(conn):
        row = conn.execute(
            sql.SQL(
                """SELECT (SELECT count(*) FROM embeddings WHERE feature_set_id = %s),
                          (SELECT count(*) FROM shards WHERE feature_set_id = %s),
                          {}(to_regclass(%s))"""
            ).format(size),
            [fs.id, fs.id, fs.index_name],
        ).fetchone()
        assert row is not None
        result.append(FeatureSetStatus(fs, int(row[0]), int(row[1]), row[2]))
    return result


def distributed(conn: Connection) -> bool:
    """Whether ``embeddings`` is a Citus distributed table (see simsearch.db.citus)."""
    row = conn.execute("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return False
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_dist_partition
                          WHERE logicalrelid = to_regclass('embeddings') AND partmethod = 'h')"""
    ).fetchone()
    return bool(row and row[0])


def server_version(conn: Connection) -> tuple[str, str | None]:
    row = conn.execute(
        """SELECT current_setting('server_version'),
                  (SELECT extversion FROM pg_extension WHERE extname = 'vector')"""
    ).fetchone()
    assert row is not None
    return str(row[0]), row[1]


def drop(conn: Connection, fs: FeatureSet) -> int:
    """Delete a feature set, its ledger, its rows and its index; image rows stay. Rows deleted."""
    with conn.transaction():
        conn.execute(SEQUENTIAL)
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(fs.index_name)))
        rows = row_count(conn, fs)
        conn.execute("DELETE FROM feature_sets WHERE id = %s", [fs.id])  # cascades
    return rows


def empty_database(conn: Connection) -> None:
    """Remove every feature set, image, shard and HNSW index (tests and benchmarks, which run
    in a SIMSEARCH_HOME of their own)."""
    with conn.transaction():
        conn.execute(SEQUENTIAL)
        names = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'embeddings_hnsw_%'"
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute("TRUNCATE feature_sets, images, shards, embeddings RESTART IDENTITY CASCADE")
