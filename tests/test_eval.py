"""`simsearch eval`: recall of the default (ANN) path against the exact scan, on stored vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data import write_shards


def clustered(rows: int, dimension: int, seed: int) -> np.ndarray:
    """Non-negative clustered vectors with a low-dimensional spread, like pooled CNN features."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.6, 0.5, (max(rows // 50, 1), dimension))
    basis = rng.standard_normal((6, dimension)) * 0.15
    labels = rng.integers(0, len(centres), rows)
    points = centres[labels] + rng.standard_normal((rows, 6)) @ basis
    return np.maximum(points, 0).astype(np.float32)


@pytest.fixture()
def clustered_dir(tmp_path: Path) -> Path:
    features = clustered(3000, 48, seed=11)
    ids = [f"{i:040x}.jpg" for i in range(len(features))]
    return write_shards(tmp_path / "clustered", ids, features, sizes=[1000])


def test_without_an_index_every_query_is_exact(cli, empty_db, clustered_dir):
    assert cli("ingest", clustered_dir, "--no-index").code == 0
    result = cli("eval", "--sample", "20", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["rows"] == 3000 and report["indexed"] is False and report["sample"] == 20
    assert [s["recall"] for s in report["settings"]] == [1.0]


def test_recall_rises_with_ef_and_reaches_one(cli, empty_db, clustered_dir):
    assert cli("ingest", clustered_dir, "--no-index").code == 0
    assert cli("index-build", "--m", "8", "--ef-construction", "32").code == 0
    result = cli("eval", "--sample", "40", "-k", "10", "--ef", "10", "400", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["indexed"] is True and report["index_params"]["m"] == 8
    low, high = report["settings"]
    # ef_search caps the candidates re-ranked: an HNSW scan yields no more than ef rows.
    assert (low["ef_search"], low["candidates"]) == (10, 10)
    assert (high["ef_search"], high["candidates"]) == (400, 100)
    assert high["recall"] >= 0.99 and high["recall"] >= low["recall"]
    assert all(s["p50_ms"] > 0 and s["p95_ms"] >= s["p50_ms"] for s in report["settings"])


def test_table_output_and_same_sample_for_same_seed(cli, empty_db, clustered_dir):
    assert cli("ingest", clustered_dir, "--no-index").code == 0
    result = cli("eval", "--sample", "5", "-k", "3")
    assert result.code == 0, result.err
    assert "3,000 rows" in result.out and "recall@3" in result.out
    assert result.lines[-1].split()[0] == "exact"

    from simsearch import database, store

    with database.connect() as conn:
        fs = store.feature_sets(conn)[0]
        first = store.sample_vectors(conn, fs, 5, seed=1)
        again = store.sample_vectors(conn, fs, 5, seed=1)
        other = store.sample_vectors(conn, fs, 5, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=False))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=False))


def test_sample_larger_than_the_feature_set_uses_every_row(cli, empty_db, tmp_path):
    folder = write_shards(
        tmp_path / "small", [f"id{i}" for i in range(7)], clustered(7, 8, seed=3) + 0.1
    )
    assert cli("ingest", folder).code == 0
    result = cli("eval", "--sample", "100", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["sample"] == 7


def test_errors_are_one_line(cli, empty_db, clustered_dir):
    none_yet = cli("eval")
    assert none_yet.code == 1 and none_yet.err.startswith("error: ") and "ingest" in none_yet.err
    assert cli("ingest", clustered_dir, "--feature-set", "a", "--no-index").code == 0
    unknown = cli("eval", "--feature-set", "b")
    assert unknown.code == 1 and "no feature set named 'b'" in unknown.err
    assert "Traceback" not in unknown.err
    bad = cli("eval", "--sample", "0")
    assert bad.code == 2 and "positive whole number" in bad.err
