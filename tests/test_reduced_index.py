"""High-dimensional feature sets are indexed on a PCA copy; every answer is still ranked exactly.

Data: 512-d vectors concentrated in a few dozen directions, as real photo embeddings are
(docs/benchmark-data.md), with held-out queries near stored rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data import write_shards

DIM, ROWS, RANK = 512, 4000, 24


def _vectors(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((RANK, DIM)).astype(np.float32)
    scales = np.linspace(3.0, 0.5, RANK, dtype=np.float32)
    codes = rng.standard_normal((rows, RANK)).astype(np.float32) * scales
    noise = 0.05 * rng.standard_normal((rows, DIM)).astype(np.float32)
    return np.maximum(codes @ basis + noise, 0).astype(np.float32)


def _ids(rows: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:06d}.jpg" for i in range(rows)]


@pytest.fixture()
def reduced_set(empty_db: None, tmp_path: Path, cli: Any) -> tuple[np.ndarray, list[str]]:
    vectors = _vectors(ROWS, seed=1)
    ids = _ids(ROWS, "r")
    folder = write_shards(tmp_path / "wide", ids, vectors, sizes=[1500])
    assert cli("ingest", folder, "--feature-set", "wide").code == 0
    built = cli("index-build", "--feature-set", "wide")
    assert built.code == 0, built.err
    return vectors, ids


def _exact(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    distances = np.linalg.norm(vectors - query, axis=1)
    return [ids[i] for i in np.argsort(distances, kind="stable")[:k]]


def test_index_build_fits_a_projection_and_indexes_the_reduced_copy(
    reduced_set: tuple[np.ndarray, list[str]], cli: Any
) -> None:
    from simsearch.db import connect, feature_sets, projections

    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "wide")
        assert fs.indexed and fs.reduced == 256
        missing = conn.execute(
            "SELECT count(*) FROM embeddings WHERE feature_set_id = %s AND reduced IS NULL",
            [fs.id],
        ).fetchone()
        assert missing == (0,)
        projection = projections.load(conn, fs)
        assert projection is not None and projection.components.shape == (256, DIM)
        definition = conn.execute(
            "SELECT pg_get_indexdef(to_regclass(%s))", [fs.index_name]
        ).fetchone()
        assert definition is not None and "reduced" in definition[0]
        # The SQL projection and the Python one agree (to half precision).
        query = _vectors(1, seed=7)[0]
        in_sql = conn.execute("SELECT simsearch_project(%s, %s)::real[]", [fs.id, query]).fetchone()
        assert in_sql is not None
        assert np.allclose(in_sql[0], projection.apply(query), rtol=2e-3, atol=2e-3)
    status = cli("db", "status")
    assert "reduced to 256" in status.out


def test_answers_are_exact_distances_with_high_recall(
    reduced_set: tuple[np.ndarray, list[str]],
) -> None:
    from simsearch.db import connect, feature_sets, knn

    vectors, ids = reduced_set
    queries = vectors[:: ROWS // 40][:40] + 0.05 * _vectors(40, seed=3)
    hits = 0
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "wide")
        for query in queries:
            found = knn.knn(conn, fs, query, 10)
            exact = knn.knn(conn, fs, query, 10, exact=True)
            # Whatever the index finds is ranked by the full vectors' exact distance.
            for match in found:
                row = ids.index(match.object_id)
                assert match.distance == pytest.approx(
                    float(np.linalg.norm(vectors[row] - query)), rel=1e-5
                )
            assert [m.object_id for m in exact] == _exact(vectors, ids, query, 10)
            hits += len({m.object_id for m in found} & {m.object_id for m in exact})
            function = conn.execute(
                "SELECT object_id FROM simsearch_knn('wide', %s, 10)", [query]
            ).fetchall()
            assert [r[0] for r in function] == [m.object_id for m in found]
    assert hits / (10 * len(queries)) >= 0.98


def test_the_sql_function_walks_the_reduced_index(
    reduced_set: tuple[np.ndarray, list[str]],
) -> None:
    from simsearch.db import connect, feature_sets

    notices: list[str] = []
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "wide")
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SET simsearch.explain = on")
        conn.execute(
            "SELECT * FROM simsearch_knn('wide', %s, 10, '{\"width\": {\">=\": 0}}')",
            [_vectors(1, seed=5)[0]],
        ).fetchall()
    plan = "\n".join(notices)
    assert f"Index Scan using {fs.index_name}" in plan or "exact scan" in plan
    notices.clear()
    with connect.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SET simsearch.explain = on")
        conn.execute("SELECT * FROM simsearch_similar('wide', 'r000010.jpg', 5)").fetchall()
    assert any(f"Index Scan using {fs.index_name}" in line for line in notices)


def test_rows_loaded_later_get_their_reduced_copy(
    reduced_set: tuple[np.ndarray, list[str]], tmp_path: Path, cli: Any
) -> None:
    from simsearch.db import connect, feature_sets, knn

    extra = _vectors(100, seed=11)
    folder = write_shards(tmp_path / "more", _ids(100, "m"), extra, sizes=[100])
    # Shard names must not clash with the first load's ledger rows.
    for path in folder.iterdir():
        path.rename(path.with_name(path.name.replace("0000", "0100")))
    assert cli("ingest", folder, "--feature-set", "wide").code == 0
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "wide")
        assert fs.reduced == 256  # a small load inserts into the index
        missing = conn.execute(
            "SELECT count(*) FROM embeddings WHERE feature_set_id = %s AND reduced IS NULL",
            [fs.id],
        ).fetchone()
        assert missing == (0,)
        found = knn.knn(conn, fs, extra[42], 1)
        assert found[0].object_id == "m000042.jpg" and found[0].distance == 0.0


def test_a_large_first_load_fits_the_projection_before_writing(
    empty_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simsearch.db import connect, feature_sets, hnsw
    from simsearch.ingest import ingest

    monkeypatch.setattr(hnsw, "AUTO_INDEX_ROWS", 3000)
    vectors = _vectors(ROWS, seed=2)
    folder = write_shards(tmp_path / "big", _ids(ROWS, "b"), vectors, sizes=[2000])
    report = ingest(folder, feature_set="big", build_index=False)
    assert report.rows == ROWS
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "big")
        row = conn.execute(
            """SELECT count(*) FILTER (WHERE reduced IS NULL), count(*),
                      (SELECT fitted_rows FROM projections WHERE feature_set_id = %s)
               FROM embeddings WHERE feature_set_id = %s""",
            [fs.id, fs.id],
        ).fetchone()
        # Fitted from the shards' rows before any was written, stored with every row.
        assert row == (0, ROWS, ROWS)
        assert hnsw.build(conn, fs)
        assert (feature_sets.resolve(conn, "big")).reduced == 256


def test_low_dimensional_sets_keep_the_full_index(empty_db: None, feature_dir: Path) -> None:
    from simsearch.db import connect, feature_sets, hnsw
    from simsearch.ingest import ingest

    ingest(feature_dir, feature_set="narrow", build_index=False)
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "narrow")
        assert fs.dimension <= 256
        hnsw.build(conn, fs)
        fs = feature_sets.resolve(conn, "narrow")
        assert fs.indexed and fs.reduced is None


def test_data_spread_over_many_directions_keeps_the_full_index(
    empty_db: None, tmp_path: Path, cli: Any
) -> None:
    """Isotropic vectors: no 256 directions keep their neighbourhoods, the check says so, and
    the feature set is indexed on its full vectors (decided once, not refitted each build)."""
    from simsearch.db import connect, feature_sets, projections

    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    folder = write_shards(tmp_path / "spread", _ids(ROWS, "s"), vectors, sizes=[2000])
    assert cli("ingest", folder, "--feature-set", "spread").code == 0
    assert cli("index-build", "--feature-set", "spread").code == 0
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "spread")
        assert fs.indexed and fs.reduced is None
        row = conn.execute(
            "SELECT used, check_recall FROM projections WHERE feature_set_id = %s", [fs.id]
        ).fetchone()
        assert row is not None and row[0] is False and row[1] < 0.99
        assert projections.load(conn, fs) is None and projections.decided(conn, fs)
