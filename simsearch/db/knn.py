"""k-nearest-neighbour search: the one place simsearch's Python side builds a kNN statement.

Three shapes, one builder: an exact scan; the HNSW index on half-precision vectors with the
candidates re-ranked by exact float32 distance; and, with a metadata filter or an image to leave
out, the ``simsearch_knn`` SQL function of migration 0002 (its plpgsql holds the filtered
strategy: a sampled estimate, an iterative index scan, an exact fallback), so that the CLI, the
server and SQL users share one implementation. ``tests/test_knn_plans.py`` holds the Python
statement and the SQL function to the same plan shape and the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb

from .. import config
from ..errors import FeatureSetError
from ..results import Match
from . import citus
from .feature_sets import Connection, FeatureSet


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
    *,
    exact: bool = False,
    ef_search: int = config.EF_SEARCH,
    candidates: int = config.CANDIDATES,
    where: Mapping[str, Any] | None = None,
    exclude: str | None = None,
) -> list[Match]:
    """The n stored vectors nearest to ``query``, nearest first.

    ``ef_search`` is the one recall knob: an HNSW scan yields at most that many rows, so it caps
    the candidates re-ranked too; ``candidates`` only trims the re-rank. ``where`` is the JSON
    filter of ``simsearch.filters``; ``exclude`` an object id left out (a stored image's own row
    when searching by it).
    """
    check_query(fs, query)
    ef = effective_ef_search(ef_search, n)
    exact_scan = exact or not fs.indexed or n > config.EF_SEARCH_MAX
    settings: dict[str, object] = {"hnsw.ef_search": ef}
    if exact_scan and not (where or exclude is not None):
        # No index may answer an exact query, whatever indexes a user has added; nor one
        # asking for more rows than an HNSW scan can yield.
        settings["enable_indexscan"] = "off"
    with conn.transaction():
        # SET LOCAL, not set_config(): on Citus only SET LOCAL reaches the workers' shards.
        conn.execute(citus.local_settings(settings))
        if where or exclude is not None:
            rows = conn.execute(
                "SELECT object_id, distance FROM simsearch_knn(%s, %s, %s, %s, %s, %s)",
                [fs.name, query, n, Jsonb(where or {}), exact, exclude],
            ).fetchall()
        elif exact_scan:
            rows = conn.execute(statement(fs, exact=True), [query, n], prepare=True).fetchall()
        else:
            pool = max(min(candidates, ef), n)
            rows = conn.execute(
                statement(fs, exact=False), [query, query, pool, n], prepare=True
            ).fetchall()
    return [Match(object_id, float(distance)) for object_id, distance in rows]


def effective_ef_search(ef_search: int, n: int) -> int:
    """hnsw.ef_search for a query of n results: at least n (the scan yields at most ef_search
    rows), within pgvector's range (1..1000), so a huge -n stays a correct answer."""
    return min(max(ef_search, n), config.EF_SEARCH_MAX)


def statement(fs: FeatureSet, *, exact: bool) -> sql.Composed:
    """The kNN statement over one feature set's rows.

    Exact: parameters (query, n). Indexed: (query, query, candidates, n). The HNSW index is
    partial (one per feature set) on a halfvec expression: the predicate and the cast must
    appear literally for the planner to match it.
    """
    if exact:
        return sql.SQL(
            """SELECT object_id, embedding <-> %s AS distance FROM embeddings
               WHERE feature_set_id = {fs_id} ORDER BY distance, object_id LIMIT %s"""
        ).format(fs_id=sql.Literal(fs.id))
    # The exact distance is computed beside the index walk, for the rows the LIMIT lets
    # through: on Citus each shard then returns ids and distances, not its candidates'
    # vectors (5 KB each at 1280-d), and the coordinator merges them.
    return sql.SQL(
        """SELECT object_id, distance FROM (
             SELECT object_id, embedding <-> %s AS distance FROM embeddings
             WHERE feature_set_id = {fs_id}
             ORDER BY embedding::halfvec({dim}) <-> %s::halfvec({dim})
             LIMIT %s
           ) AS candidates
           ORDER BY distance, object_id LIMIT %s"""
    ).format(fs_id=sql.Literal(fs.id), dim=sql.Literal(fs.dimension))


def stored_vector(conn: Connection, fs: FeatureSet, object_id: str) -> np.ndarray | None:
    """The vector a feature set holds for ``object_id``, or None."""
    row: Any = conn.execute(
        "SELECT embedding FROM embeddings WHERE feature_set_id = %s AND object_id = %s",
        [fs.id, object_id],
        prepare=True,
    ).fetchone()
    return None if row is None else np.asarray(row[0].to_numpy(), dtype=np.float32)
