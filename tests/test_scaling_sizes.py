"""The bytes-per-vector figures of docs/scaling.md ("Sizing on paper"), checked on a real server.

The figures are derived from page layout (pgvector 0.8.5's element and neighbour tuples, 8 KiB
pages): a vector(1280) row fills a heap page on its own, an HNSW element of a vector(1280)
does the same, a halfvec(1280) element shares its page with one other. Small tables suffice
because the per-page packing is what sets the figure; the tolerance covers the metapage and
the few upper-layer elements whose larger neighbour lists change a page's packing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgcluster import tcp_cluster

# Enough rows that the metapage and the odd fuller page are noise (each adds 8 KiB / rows to
# the figure; a 256-d element shares its page with nine others, so that layout needs more).
ROWS = {"halfvec(256)": 3000}
DEFAULT_ROWS = 600

# (column type, HNSW opclass or expression) -> (heap bytes per row, HNSW bytes per vector),
# as in docs/scaling.md's table. Rows as simsearch's embeddings table holds them: feature set
# id, a 44-character object id, shard id, the vector inline and uncompressed.
EXPECTED = {
    "vector(1280)": (8192, 8192),
    "vector(1280) halfvec index": (8192, 4096),
    "halfvec(1280)": (2731, 4096),
    "halfvec(256)": (631, 836),
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ss-size-") as folder, tcp_cluster(Path(folder)) as u:
        with psycopg.connect(u, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        yield u


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_bytes_per_vector(url: str, layout: str) -> None:
    column = layout.split()[0]
    kind, dim = column.rstrip(")").split("(")
    if layout.endswith("halfvec index"):
        indexed, ops = f"(embedding::halfvec({dim}))", "halfvec_l2_ops"
    else:
        indexed, ops = "embedding", f"{kind}_l2_ops"
    rows = ROWS.get(layout, DEFAULT_ROWS)
    table = "t_" + layout.replace(" ", "_").replace("(", "").replace(")", "")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""CREATE TABLE {table} (
                    feature_set_id integer NOT NULL, object_id text NOT NULL, shard_id integer,
                    embedding {column} NOT NULL, PRIMARY KEY (feature_set_id, object_id))"""
        )
        # As migrations 0001 and 0003 store simsearch's vectors: inline, never compressed.
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN")
        conn.execute(f"ALTER TABLE {table} SET (toast_tuple_target = 8160)")
        conn.execute(
            f"""INSERT INTO {table}
                SELECT 1, md5(g::text) || left(md5((-g)::text), 8) || '.jpg', 1,
                       (SELECT array_agg(random()) FROM generate_series(1, {dim})
                        WHERE g > 0)::{column}
                FROM generate_series(1, {rows}) g"""
        )
        conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw ({indexed} {ops})")
        heap, hnsw = conn.execute(
            f"""SELECT pg_relation_size('{table}')::float8 / {rows},
                       pg_relation_size('{table}_hnsw')::float8 / {rows}"""
        ).fetchone()  # type: ignore[misc]
        conn.execute(f"DROP TABLE {table}")
    want_heap, want_hnsw = EXPECTED[layout]
    assert heap == pytest.approx(want_heap, rel=0.02), heap
    assert hnsw == pytest.approx(want_hnsw, rel=0.03), hnsw
