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

    from simsearch.db import connect, feature_sets

    with connect.connect() as conn:
        fs = feature_sets.feature_sets(conn)[0]
        first = feature_sets.sample_vectors(conn, fs, 5, seed=1)
        again = feature_sets.sample_vectors(conn, fs, 5, seed=1)
        other = feature_sets.sample_vectors(conn, fs, 5, seed=2)
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


def index_oid() -> int | None:
    from simsearch.db import connect

    with connect.connect() as conn:
        row = conn.execute(
            "SELECT oid FROM pg_class WHERE relname LIKE 'embeddings_hnsw_%'"
        ).fetchone()
    return None if row is None else int(row[0])


def test_incremental_ingest_keeps_the_index_valid(cli, empty_db, tmp_path):
    """Small loads insert into the HNSW index; large ones drop it and rebuild it, same params."""
    features = clustered(4400, 48, seed=5)
    ids = [f"{i:040x}.jpg" for i in range(len(features))]
    base = write_shards(tmp_path / "base", ids[:3000], features[:3000], sizes=[1000])
    small = write_shards(tmp_path / "small", ids[3000:3100], features[3000:3100])
    large = write_shards(tmp_path / "large", ids[3100:], features[3100:])
    assert cli("ingest", base, "--feature-set", "f", "--no-index").code == 0
    assert cli("index-build", "--m", "8", "--ef-construction", "32").code == 0
    before = index_oid()

    # 100 rows onto 3,000 (3%): inserted into the same index.
    (tmp_path / "small" / "0000.object_ids.npy").rename(tmp_path / "small" / "0005.object_ids.npy")
    (tmp_path / "small" / "0000.features.npy").rename(tmp_path / "small" / "0005.features.npy")
    result = cli("ingest", small, "--feature-set", "f")
    assert result.code == 0, result.err
    assert index_oid() == before and "rebuilding" not in result.err

    # 1,300 rows onto 3,100 (42%): dropped, loaded, rebuilt with the same parameters.
    (tmp_path / "large" / "0000.object_ids.npy").rename(tmp_path / "large" / "0006.object_ids.npy")
    (tmp_path / "large" / "0000.features.npy").rename(tmp_path / "large" / "0006.features.npy")
    result = cli("ingest", large, "--feature-set", "f")
    assert result.code == 0, result.err
    assert "rebuilding the HNSW index" in result.err and "built the HNSW index" in result.out
    assert index_oid() not in (None, before)

    report = json.loads(cli("eval", "--sample", "30", "--ef", "200", "--json").out)
    assert report["rows"] == 4400 and report["indexed"] is True
    assert report["index_params"]["m"] == 8 and report["index_params"]["ef_construction"] == 32
    assert report["settings"][0]["recall"] >= 0.99


def test_a_failed_large_load_leaves_the_index_in_place(cli, empty_db, tmp_path):
    features = clustered(4000, 48, seed=6)
    ids = [f"{i:040x}.jpg" for i in range(len(features))]
    base = write_shards(tmp_path / "base", ids[:3000], features[:3000], sizes=[1000])
    assert cli("ingest", base, "--feature-set", "f", "--no-index").code == 0
    assert cli("index-build", "--m", "8").code == 0
    # Ids unique within the load, but the second shard repeats one already stored: the check
    # against stored rows happens inside the load, after the index was dropped.
    clash = [*ids[3000:3999], ids[0]]
    bad = write_shards(tmp_path / "bad", clash, features[3000:4000], sizes=[500])
    for name in ("0000", "0001"):
        for suffix in (".object_ids.npy", ".features.npy"):
            (bad / f"{name}{suffix}").rename(bad / f"{int(name) + 7:04d}{suffix}")
    result = cli("ingest", bad, "--feature-set", "f")
    assert result.code == 1 and "already stored" in result.err
    report = json.loads(cli("eval", "--sample", "5", "--json").out)
    assert report["indexed"] is True and report["index_params"]["m"] == 8


def test_held_out_queries_leave_their_own_row_out(cli, empty_db, clustered_dir):
    assert cli("ingest", clustered_dir, "--feature-set", "c").code == 0
    assert cli("index-build", "--feature-set", "c").code == 0
    result = cli("eval", "--sample", "20", "--held-out", "--ef", "10", "--ef", "400", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["held_out"] is True
    low, high = report["settings"]
    assert low["recall"] <= high["recall"] and high["recall"] >= 0.9
    table = cli("eval", "--sample", "5", "--held-out")
    assert "left out of its own results (held out)" in table.out
