"""k-nearest-neighbour search: the one place simsearch's Python side builds a kNN statement.

Three shapes, one builder: an exact scan; the HNSW index on half-precision vectors with the
candidates re-ranked by exact float32 distance; and, with a metadata filter or an image to leave
out, the ``simsearch_knn`` SQL function of migration 0002 (its plpgsql holds the filtered
strategy: a sampled estimate, an iterative index scan, an exact fallback), so that the CLI, the
server and SQL users share one implementation. tests/test_sql_surface.py holds the Python
statement and the SQL function to the same plan shape and the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pgvector import HalfVector
from psycopg import sql
from psycopg.types.json import Jsonb

from .. import config
from ..errors import FeatureSetError
from ..results import Match
from . import citus, projections
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
    # hnsw.ef_search for the statements below; simsearch.ef_search for simsearch_knn.
    settings: dict[str, object] = {"hnsw.ef_search": ef, "simsearch.ef_search": ef}
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
            walked = query if fs.reduced is None else _reduce(conn, fs, query)
            rows = conn.execute(
                statement(fs, exact=False), [query, walked, pool, n], prepare=True
            ).fetchall()
    return [Match(object_id, float(distance)) for object_id, distance in rows]


def effective_ef_search(ef_search: int, n: int) -> int:
    """hnsw.ef_search for a query of n results: at least n (the scan yields at most ef_search
    rows), within pgvector's range (1..1000), so a huge -n stays a correct answer."""
    return min(max(ef_search, n), config.EF_SEARCH_MAX)


def statement(fs: FeatureSet, *, exact: bool) -> sql.Composed:
    """The kNN statement over one feature set's rows.

    Exact: parameters (query, n). Indexed: (query, the query as the index holds it,
    candidates, n): the full query, or its PCA copy when the index is on ``reduced``. The HNSW
    index is partial (one per feature set) on a halfvec expression: the predicate and the cast
    must appear literally for the planner to match it.
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
             ORDER BY {column}::halfvec({dim}) <-> %s::halfvec({dim})
             LIMIT %s
           ) AS candidates
           ORDER BY distance, object_id LIMIT %s"""
    ).format(
        fs_id=sql.Literal(fs.id),
        column=sql.Identifier("embedding" if fs.reduced is None else "reduced"),
        dim=sql.Literal(fs.dimension if fs.reduced is None else fs.reduced),
    )


def _reduce(conn: Connection, fs: FeatureSet, query: np.ndarray) -> HalfVector:
    return HalfVector(projections.for_index(conn, fs).apply(query))


def stored_vector(conn: Connection, fs: FeatureSet, object_id: str) -> np.ndarray | None:
    """The vector a feature set holds for ``object_id``, or None."""
    row: Any = conn.execute(
        "SELECT embedding FROM embeddings WHERE feature_set_id = %s AND object_id = %s",
        [fs.id, object_id],
        prepare=True,
    ).fetchone()
    return None if row is None else np.asarray(row[0].to_numpy(), dtype=np.float32)


def neighbours_of(
    conn: Connection,
    fs: FeatureSet,
    object_ids: list[str],
    k: int,
    *,
    exact: bool,
    ef_search: int = config.EF_SEARCH,
) -> list[tuple[str, str, float]]:
    """The k nearest stored neighbours of each of several stored images, in one statement:
    ``(query id, neighbour id, exact distance)`` rows, the image itself left out.

    Many query vectors per round trip (``unnest`` + LATERAL): each query is the statement's
    HNSW scan (or, ``exact``, an exact scan) on its stored vector, so that finding duplicates
    asks the index once per image without sending vectors back and forth. Candidates are
    re-ranked by exact float32 distance, as ``knn`` does. k + 1 rows are asked for because
    the image itself comes back among its own neighbours.
    """
    order = (
        sql.SQL("e.embedding <-> q.embedding")
        if exact
        else sql.SQL("e.embedding::halfvec({dim}) <-> q.embedding::halfvec({dim})").format(
            dim=sql.Literal(fs.dimension)
        )
    )
    statement = sql.SQL(
        """SELECT q.object_id, c.object_id, c.distance FROM (
             SELECT e.object_id, e.embedding FROM embeddings e
             WHERE e.feature_set_id = {fs_id} AND e.object_id = ANY(%s)) AS q
           CROSS JOIN LATERAL (
             SELECT n.object_id, (n.embedding <-> q.embedding)::float8 AS distance FROM (
               SELECT e.object_id, e.embedding FROM embeddings e
               WHERE e.feature_set_id = {fs_id}
               ORDER BY {order} LIMIT %s) AS n
           ) AS c
           WHERE c.object_id <> q.object_id"""
    ).format(fs_id=sql.Literal(fs.id), order=order)
    with conn.transaction():
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true)",
            [str(effective_ef_search(ef_search, k + 1))],
        )
        # Exact: no index may answer. Indexed: the planner would rather sort a small feature
        # set than walk its graph per query; the graph is what scales, so it walks it always.
        if exact:
            conn.execute("SET LOCAL enable_indexscan = off")
        else:
            conn.execute("SET LOCAL enable_seqscan = off")
        rows = conn.execute(statement, [object_ids, k + 1]).fetchall()
    return [(q, n, float(d)) for q, n, d in rows]
