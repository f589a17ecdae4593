"""A real Citus cluster (coordinator + 2 workers) holds simsearch's schema shapes.

The tables mirror simsearch's (migrations/versions/0001_initial_schema.py), in the layout
docs/scaling.md describes: ``images`` and ``embeddings`` hash-distributed by ``object_id`` and
co-located, ``feature_sets`` a reference table, the HNSW index (halfvec expression, partial on
the feature set, as simsearch builds it) on every shard, kNN merged by the coordinator.
Plain SQL through psycopg: this proves the cluster, not simsearch's code on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from clusters import CitusCluster, citus_bindir
from pgcluster import _bin_dir

DIM = 32
ROWS = 1200
SHARDS = 8  # per distributed table; few, so that HNSW builds and EXPLAINs stay quick
K = 10


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(12).standard_normal((ROWS, DIM)).astype(np.float32)


def _ids() -> list[str]:
    return [f"{i:05d}.jpg" for i in range(ROWS)]


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@pytest.fixture(scope="module")
def loaded(citus: CitusCluster, vectors: np.ndarray) -> Iterator[CitusCluster]:
    """The schema, distributed, and ROWS vectors loaded with COPY through the coordinator."""
    try:
        _load(citus.url, vectors)
        yield citus
    finally:
        with psycopg.connect(citus.url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS embeddings, images, feature_sets")


def _load(url: str, vectors: np.ndarray) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in (
            """CREATE TABLE feature_sets (
                   id serial PRIMARY KEY, name text NOT NULL UNIQUE, dimension integer NOT NULL)""",
            """CREATE TABLE images (
                   object_id text PRIMARY KEY, path text, meta jsonb NOT NULL DEFAULT '{}')""",
            """CREATE TABLE embeddings (
                   feature_set_id integer NOT NULL,
                   object_id text NOT NULL,
                   embedding vector NOT NULL,
                   PRIMARY KEY (feature_set_id, object_id))""",
            "SELECT create_reference_table('feature_sets')",
            f"SELECT create_distributed_table('images', 'object_id', shard_count => {SHARDS})",
            # Co-located: an image and its embeddings live in the same shard group, so the
            # foreign key and the join of a kNN result to its image stay on one worker.
            "SELECT create_distributed_table('embeddings', 'object_id', colocate_with => 'images')",
            # Foreign keys come after distribution: a local table may not reference a
            # distributed one, so simsearch's CREATE TABLE ... REFERENCES cannot go first.
            """ALTER TABLE embeddings ADD FOREIGN KEY (feature_set_id)
                   REFERENCES feature_sets ON DELETE CASCADE""",
            """ALTER TABLE embeddings ADD FOREIGN KEY (object_id)
                   REFERENCES images ON DELETE CASCADE""",
        ):
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("INSERT INTO feature_sets (name, dimension) VALUES ('photos', %s)", (DIM,))
        with conn.transaction():
            with conn.cursor().copy("COPY images (object_id, path) FROM STDIN") as copy:
                for object_id in _ids():
                    copy.write_row((object_id, f"2024/{object_id}"))
            with conn.cursor().copy(
                "COPY embeddings (feature_set_id, object_id, embedding) FROM STDIN"
            ) as copy:
                for object_id, v in zip(_ids(), vectors, strict=True):
                    copy.write_row((1, object_id, _literal(v)))


def test_nodes_are_real_and_have_both_extensions(citus: CitusCluster) -> None:
    with psycopg.connect(citus.url) as conn:
        nodes = conn.execute(
            "SELECT nodeport, noderole, isactive, groupid = 0 FROM pg_dist_node ORDER BY groupid"
        ).fetchall()
        assert [(p, r, a, c) for p, r, a, c in nodes] == [
            (citus.coordinator.port, "primary", True, True),
            *((w.port, "primary", True, False) for w in citus.workers),
        ]
    for url in [citus.url, *citus.worker_urls]:
        with psycopg.connect(url) as conn:
            extensions = dict(
                conn.execute(
                    "SELECT extname, extversion FROM pg_extension WHERE extname IN "
                    "('citus', 'vector')"
                ).fetchall()
            )
            assert extensions["citus"].startswith("14.") and extensions["vector"] == "0.8.5"
            assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("citus",)


def test_rows_land_on_both_workers(loaded: CitusCluster) -> None:
    with psycopg.connect(loaded.url) as conn:
        kinds = dict(
            conn.execute("SELECT table_name::text, citus_table_type FROM citus_tables").fetchall()
        )
        assert kinds == {
            "feature_sets": "reference",
            "images": "distributed",
            "embeddings": "distributed",
        }
        per_port = dict(
            conn.execute(
                """SELECT nodeport, count(*) FROM citus_shards
                   WHERE table_name = 'embeddings'::regclass GROUP BY nodeport"""
            ).fetchall()
        )
        assert sorted(per_port) == sorted(w.port for w in loaded.workers)
        assert sum(per_port.values()) == SHARDS
        # Co-location: an image's embeddings are in a shard on the same worker as the image.
        node_of = dict(conn.execute("SELECT shardid, nodeport FROM citus_shards").fetchall())
        placed = conn.execute(
            """SELECT get_shard_id_for_distribution_column('images', object_id),
                      get_shard_id_for_distribution_column('embeddings', object_id)
               FROM images"""
        ).fetchall()
        assert len(placed) == ROWS
        assert all(node_of[i] == node_of[e] for i, e in placed)
        assert {node_of[i] for i, _ in placed} == set(per_port)
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone() == (ROWS,)
    # Count on each worker directly, in its shard tables: both hold a real share.
    counts = []
    for url in loaded.worker_urls:
        with psycopg.connect(url) as conn:
            # Citus hides shard tables from pg_class on workers unless told not to.
            conn.execute("SET citus.override_table_visibility = off")
            shard_tables = [
                name
                for (name,) in conn.execute(
                    """SELECT relname::text FROM pg_class
                       WHERE relname ~ '^embeddings_[0-9]+$' AND relkind = 'r'"""
                ).fetchall()
            ]
            assert len(shard_tables) == SHARDS // 2
            counts.append(
                sum(
                    conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                    for t in shard_tables
                )
            )
            # The reference table is whole on every worker.
            (ref,) = conn.execute(
                "SELECT relname::text FROM pg_class WHERE relname ~ '^feature_sets_[0-9]+$'"
            ).fetchall()
            assert conn.execute(f"SELECT name FROM {ref[0]}").fetchall() == [("photos",)]
    assert sum(counts) == ROWS and min(counts) > ROWS // 4, counts


def test_exact_knn_through_the_coordinator_equals_numpy(
    loaded: CitusCluster, vectors: np.ndarray
) -> None:
    ids = np.array(_ids())
    with psycopg.connect(loaded.url) as conn:
        for qi in (0, 517, 1111):
            q = vectors[qi] + 0.01
            rows = conn.execute(
                f"""SELECT object_id, embedding <-> %s::vector({DIM}) AS d FROM embeddings
                    WHERE feature_set_id = 1 ORDER BY d LIMIT {K}""",
                (_literal(q),),
            ).fetchall()
            distances = np.linalg.norm(vectors - q, axis=1)
            order = np.argsort(distances, kind="stable")[:K]
            assert [r[0] for r in rows] == list(ids[order])
            assert np.allclose([r[1] for r in rows], distances[order], rtol=1e-5)
        # The join to the co-located images table is answered too, nearest first.
        joined = conn.execute(
            f"""SELECT i.path FROM embeddings e JOIN images i USING (object_id)
                ORDER BY e.embedding <-> %s::vector({DIM}) LIMIT 3""",
            (_literal(vectors[42]),),
        ).fetchall()
        assert joined[0] == ("2024/00042.jpg",)


@pytest.fixture(scope="module")
def indexed(loaded: CitusCluster) -> CitusCluster:
    with psycopg.connect(loaded.url, autocommit=True) as conn:
        conn.execute(
            f"""CREATE INDEX embeddings_hnsw_1 ON embeddings
                USING hnsw ((embedding::halfvec({DIM})) halfvec_l2_ops)
                WITH (m = 16, ef_construction = 64) WHERE feature_set_id = 1"""
        )
    return loaded


def test_hnsw_index_is_on_every_shard(indexed: CitusCluster) -> None:
    with psycopg.connect(indexed.url) as conn:
        # run_command_on_placements: once per shard placement, on the worker holding it.
        rows = conn.execute(
            """SELECT nodeport, success, result FROM run_command_on_placements(
                   'embeddings',
                   $$SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
                     JOIN pg_am a ON a.oid = c.relam
                     WHERE x.indrelid = '%s'::regclass AND a.amname = 'hnsw'$$)"""
        ).fetchall()
    assert len(rows) == SHARDS
    assert all(ok and result == "1" for _, ok, result in rows), rows
    assert {port for port, _, _ in rows} == {w.port for w in indexed.workers}


def _knn(conn: psycopg.Connection, q: np.ndarray, limit: int) -> list[tuple[str, float]]:
    # simsearch's index query shape: the halfvec expression the index is built on.
    return conn.execute(  # type: ignore[return-value]
        f"""SELECT object_id, (embedding::halfvec({DIM}) <-> %s::halfvec({DIM}))::float8 AS d
            FROM embeddings WHERE feature_set_id = 1 ORDER BY d LIMIT {limit}""",
        (_literal(q),),
    ).fetchall()


def test_set_local_ef_search_reaches_the_workers(
    indexed: CitusCluster, vectors: np.ndarray
) -> None:
    q = vectors[7]
    with psycopg.connect(indexed.url) as conn:
        # What each shard's query sees, evaluated on the workers (inet_server_port() shows
        # where): without propagation, the workers keep pgvector's default of 40.
        seen = """SELECT DISTINCT inet_server_port(), current_setting('hnsw.ef_search')
                  FROM embeddings"""
        with conn.transaction():
            conn.execute("SET LOCAL hnsw.ef_search = 7")
            rows = conn.execute(seen).fetchall()
            assert {port for port, _ in rows} == {w.port for w in indexed.workers}
            assert {setting for _, setting in rows} == {"40"}
        with conn.transaction():
            # Citus propagates SET statements, not set_config() calls (which simsearch's
            # store.knn uses today): a function call changes the coordinator alone.
            conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            conn.execute("SELECT set_config('hnsw.ef_search', '7', true)")
            rows = conn.execute(seen).fetchall()
            assert {setting for _, setting in rows} == {"40"}
        with conn.transaction():
            conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            conn.execute("SET LOCAL hnsw.ef_search = 7")
            rows = conn.execute(seen).fetchall()
            assert {setting for _, setting in rows} == {"7"}
            assert {port for port, _ in rows} == {w.port for w in indexed.workers}
            # And the HNSW scans obey it: each shard's index scan returns at most ef_search
            # rows (pgvector's iterative scan is off), so 100 asked for come back as exactly
            # 7 per shard, merged by the coordinator.
            conn.execute("SET LOCAL enable_seqscan = off")
            few = _knn(conn, q, 100)
            assert len(few) == 7 * SHARDS and few[0][0] == "00007.jpg"
        with conn.transaction():
            conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL hnsw.ef_search = 200")
            many = _knn(conn, q, 100)
            assert len(many) == 100
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN (COSTS OFF) SELECT object_id FROM embeddings "
                    f"WHERE feature_set_id = 1 ORDER BY embedding::halfvec({DIM}) "
                    f"<-> '{_literal(q)}'::halfvec({DIM}) LIMIT 10"
                ).fetchall()
            )
            assert "Custom Scan (Citus Adaptive)" in plan and "embeddings_hnsw_1" in plan, plan
        # After the transactions nothing lingers on the workers' pooled connections.
        rows = conn.execute(seen).fetchall()
        assert {setting for _, setting in rows} == {"40"}


def test_simsearch_ann_query_shape_through_the_coordinator(
    indexed: CitusCluster, vectors: np.ndarray
) -> None:
    """store._ann_query's shape: HNSW candidates on halfvec in a LIMITed subquery, re-ranked by
    exact float32 distance. Citus runs the subquery as a distributed subplan (each shard's top
    candidates, merged to the best ``pool`` on the coordinator) and the re-rank on the
    coordinator."""
    ids = np.array(_ids())
    queries = range(0, ROWS, 100)
    hits = 0
    with psycopg.connect(indexed.url) as conn, conn.transaction():
        conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
        conn.execute("SET LOCAL hnsw.ef_search = 200")
        for qi in queries:
            q = _literal(vectors[qi] * 0.9)
            rows = conn.execute(
                f"""SELECT object_id, distance FROM (
                      SELECT object_id, embedding <-> %s AS distance FROM (
                        SELECT object_id, embedding FROM embeddings
                        WHERE feature_set_id = 1
                        ORDER BY embedding::halfvec({DIM}) <-> %s::halfvec({DIM})
                        LIMIT %s
                      ) AS candidates
                    ) AS ranked
                    ORDER BY distance, object_id LIMIT %s""",
                (q, q, 100, K),
                prepare=True,
            ).fetchall()
            distances = np.linalg.norm(vectors - vectors[qi] * 0.9, axis=1)
            exact = ids[np.argsort(distances, kind="stable")[:K]]
            hits += len({r[0] for r in rows} & set(exact))
            # Distances are the exact float32 ones, whatever found the candidates.
            by_id = dict(zip(ids, distances, strict=True))
            assert np.allclose([r[1] for r in rows], [by_id[r[0]] for r in rows], rtol=1e-5)
    # 150 rows a shard, ef_search 200: each shard's graph search is all but exhaustive.
    assert hits / (K * len(queries)) >= 0.95


def test_citus_build_is_cached_and_keeps_pgvector(citus: CitusCluster) -> None:
    """scripts/citus-build.sh again: the same copy at once, with Citus and pgvector in it,
    readable by the unprivileged server user."""
    started = time.monotonic()
    bindir = citus_bindir()
    assert time.monotonic() - started < 5  # a rebuild takes minutes; the cache well under 1 s
    assert bindir == citus.coordinator.bindir
    prefix = bindir.parent
    for path in (
        prefix / "lib/postgresql/citus.so",
        prefix / "lib/postgresql/vector.so",
        prefix / "share/postgresql/extension/citus.control",
        prefix / "share/postgresql/extension/vector.control",
    ):
        assert path.stat().st_mode & 0o004, path
    assert (bindir / "postgres").stat().st_mode & 0o001
    makefile = prefix / "lib/postgresql/pgxs/src/Makefile.global"
    assert "-Wmissing-variable-declarations" not in makefile.read_text()
    # The wheel itself is left as pip installed it.
    wheel_makefile = _bin_dir().parent / "lib/postgresql/pgxs/src/Makefile.global"
    assert "-Wmissing-variable-declarations" in wheel_makefile.read_text()
