"""A feature set's HNSW index: building and dropping it, sizing the build, and when to build.

One partial index per feature set, on half-precision vectors: ``reduced::halfvec(256)``, the
PCA copy (``simsearch/projection.py``), for feature sets of more dimensions, else
``embedding::halfvec(D)``. Half precision and the PCA copy shrink the index and its build;
candidates are always re-ranked by the exact float32 distance of the full vectors (``knn``).
"""

from __future__ import annotations

import json
import os

from psycopg import sql

from .. import config
from ..errors import FeatureSetError
from ..progress import Progress
from . import citus, projections
from .feature_sets import SEQUENTIAL, Connection, FeatureSet, row_count

_INDEX_LOCK = 7_411_003  # pg_advisory_xact_lock(key, feature_set_id): one index build at a time
MAX_HALFVEC_DIMENSION = 4000  # pgvector's limit for indexing halfvec
# Below this many rows an exact scan is fast enough (about 30 ms) and always right, so no
# index is built automatically; `simsearch index-build` builds one at any size.
AUTO_INDEX_ROWS = 20_000
# A load adding more than this share of a feature set's rows rebuilds its index (see
# rebuild_params); smaller loads insert into it. Break-even measured near 1/15.
REBUILD_FRACTION = 0.05


def build(
    conn: Connection,
    fs: FeatureSet,
    m: int = config.HNSW_M,
    ef_construction: int = config.HNSW_EF_CONSTRUCTION,
    if_missing: bool = False,
) -> bool:
    """(Re)build the feature set's HNSW index; False if ``if_missing`` and another process
    built it meanwhile (two ingests finishing at once)."""
    if fs.dimension > MAX_HALFVEC_DIMENSION:
        raise FeatureSetError(
            f"feature set {fs.name!r} has dimension {fs.dimension}; pgvector indexes at most "
            f"{MAX_HALFVEC_DIMENSION} (queries stay exact)"
        )
    name = sql.Identifier(fs.index_name)
    projection = projections.ensure(conn, fs)
    if projection is not None:
        projections.backfill(conn, fs, projection)  # rows loaded before it was fitted
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
        # On Citus each shard's graph is built by itself: size the memory for one shard; one
        # connection per node, because the UPDATE below writes a reference table.
        shards = citus.topology(conn).shard_count or 1
        conn.execute(SEQUENTIAL)
        indexed_dimension = projection.dimension if projection else fs.dimension
        memory = build_memory_mb(-(-row_count(conn, fs) // shards), indexed_dimension, m)
        conn.execute(
            citus.local_settings(
                {"maintenance_work_mem": f"{memory}MB", "max_parallel_maintenance_workers": 2}
            )
        )
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                """CREATE INDEX {name} ON embeddings
                   USING hnsw (({column}::halfvec({dim})) halfvec_l2_ops)
                   WITH (m = {m}, ef_construction = {efc})
                   WHERE feature_set_id = {fs_id}"""
            ).format(
                name=name,
                column=sql.Identifier("reduced" if projection else "embedding"),
                dim=sql.Literal(indexed_dimension),
                m=sql.Literal(m),
                efc=sql.Literal(ef_construction),
                fs_id=sql.Literal(fs.id),
            )
        )
        params: dict[str, object] = {
            "type": "hnsw",
            "opclass": "halfvec_l2_ops",
            "m": m,
            "ef_construction": ef_construction,
        }
        if projection is not None:
            params["reduced"] = projection.dimension
            params["projection"] = projections.fitted_at(conn, fs)
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


def drop(conn: Connection, fs: FeatureSet) -> None:
    with conn.transaction():
        conn.execute(SEQUENTIAL)
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(fs.index_name)))
        conn.execute("UPDATE feature_sets SET index_params = NULL WHERE id = %s", [fs.id])


def auto_build(conn: Connection, fs: FeatureSet, total_rows: int, progress: Progress) -> bool:
    """Build the default index once a feature set is large enough for it to pay; True if this
    call built it. Shared by `ingest` and `index`."""
    if fs.indexed or total_rows < AUTO_INDEX_ROWS or fs.dimension > MAX_HALFVEC_DIMENSION:
        return False
    progress.note(f"building the HNSW index on {total_rows:,} rows ...")
    # if_missing: another load finishing at the same moment may have built it meanwhile.
    return build(conn, fs, if_missing=True)


def rebuild_params(conn: Connection, fs: FeatureSet, adding: int) -> tuple[int, int] | None:
    """(m, ef_construction) when a load of ``adding`` rows should drop the index and rebuild
    it afterwards.

    HNSW keeps itself valid on INSERT, but one insert costs about fifteen times a bulk build's
    share per row (1,000 rows into an indexed 20,000: 35 s; building all 20,000: 47 s; see
    docs/benchmarks.md). So a load adding more than REBUILD_FRACTION of the stored rows drops
    the index and rebuilds it with the same parameters; smaller loads insert into it.
    """
    if not fs.indexed or adding <= REBUILD_FRACTION * row_count(conn, fs):
        return None
    params = fs.index_params or {}
    m = int(params.get("m", config.HNSW_M))
    return m, int(params.get("ef_construction", config.HNSW_EF_CONSTRUCTION))
