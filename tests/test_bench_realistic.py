"""The realistic benchmark data at a tiny size: real crops of scikit-image's photos embedded by
the shipped model, the generator fitted to them, the hardness report, the hnswlib peer, the PCA
check, and bench_million on the fitted set (figures are never asserted, only their sense)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench import datagen, datasets, hardness, pca_loss, peer, photos, realistic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def crops() -> photos.RealCrops:
    # Four sample photos (nothing downloaded), a few crops each: about 50 embeddings, ~2 s.
    spec = photos.CropSpec(photos=5, crops=10, seen_queries=6, new_queries_per_photo=3)
    sources = photos.photo_sources(packages=(), skimage=True)
    return photos.make(spec, sources, photos.Embedder())


@pytest.fixture(scope="module")
def model(crops: photos.RealCrops) -> realistic.Model:
    return realistic.fit(crops.stored, crops.stored_photo)


def test_real_crops_are_model_embeddings_with_held_out_queries(crops: photos.RealCrops) -> None:
    assert crops.stored.shape == (40, 1280)  # 4 stored photos x 10 crops; 1 photo held out
    assert crops.stored.dtype == np.float32 and (crops.stored >= 0).all()
    assert len(crops.queries) == 6 + 3
    held_out = set(crops.query_photo[crops.query_new].tolist())
    assert held_out and not held_out & set(crops.stored_photo.tolist())
    assert set(crops.query_photo[~crops.query_new].tolist()) <= set(crops.stored_photo.tolist())


def test_real_crops_cache_round_trips(crops: photos.RealCrops, tmp_path: Path) -> None:
    crops.save(tmp_path / "crops.npz")
    again = photos.RealCrops.load(tmp_path / "crops.npz")
    assert np.array_equal(again.stored, crops.stored)
    assert np.array_equal(again.query_new, crops.query_new)


def test_fit_keeps_each_photos_mean_and_spread(crops: photos.RealCrops) -> None:
    fitted = realistic.fit(crops.stored, crops.stored_photo)
    first = crops.stored[crops.stored_photo == crops.stored_photo[0]]
    assert np.allclose(fitted.centres[0], first.mean(axis=0), atol=1e-4)
    assert (np.diff(fitted.spreads, axis=1) <= 1e-5).all()  # strongest direction first
    norms = np.linalg.norm(fitted.directions, axis=2)
    assert np.allclose(norms[fitted.spreads > 0], 1.0, atol=1e-4)


def test_generated_shards_are_deterministic_origin_format(
    model: realistic.Model, tmp_path: Path
) -> None:
    spec = realistic.Spec(2_500, shard_rows=1_000)
    folder = realistic.ensure(tmp_path, spec, model, "test")
    ids, features = datagen.read_all(folder)
    assert features.shape == (2_500, 1280) and features.dtype == np.float32
    assert ids.dtype.kind == "U" and len(set(ids.tolist())) == 2_500
    assert (features >= 0).all()
    again = realistic.Generator(model, spec).shard(2)
    assert np.array_equal(again[1], features[2_000:])
    queries, new = realistic.Generator(model, spec).queries(50)
    assert queries.shape == (50, 1280) and 0 < new.sum() < 50
    # Views of one photo lie closer together than views of different photos.
    _, which = realistic.Generator(model, spec).shard_photos(0)
    same = which[:-1] == which[1:]
    gaps = np.linalg.norm(features[1:1_000] - features[:999], axis=1)
    assert gaps[same[:999]].mean() < gaps[~same[:999]].mean()


def test_hardness_table_sets_side_by_side(crops: photos.RealCrops, model: realistic.Model) -> None:
    real = datasets.Dataset(
        "real crops",
        None,
        np.array([f"crop-{i}" for i in range(len(crops.stored))]),
        crops.stored,
        crops.queries,
        crops.query_new,
    )
    rows = hardness.side_by_side(real, model, views=10.0, extra_rows=[300])
    assert [r.rows for r in rows] == [40, 40, 40, 40, 300, 300]
    for r in rows:
        assert r.contrast > 1.0 and r.lid > 0 and r.participation >= 1.0
    text = hardness.table(rows)
    assert text.count("\n") == 1 + len(rows)
    assert "real crops" in text and "clustered (datagen)" in text


def test_peer_and_pca_check_on_generated_vectors(model: realistic.Model) -> None:
    data = datasets.generated_like(model, 2_000, 30, views=3.0, new_share=0.2)
    truth = peer.exact_top(data.features, data.queries)
    result = peer.hnsw(data.features, data.queries, truth, efs=(10, 200), new=data.query_new)
    assert [p.ef for p in result.curve] == [10, 200]
    assert result.curve[1].recall >= 0.9 and result.exact_p50_ms > 0
    assert "| 200 |" in peer.table(result)
    basis = pca_loss.fit_pca(data.features, 32)
    recall = pca_loss.reranked_recall(data.features, data.queries, truth, basis, [20, 2_000])
    assert recall[20] <= recall[2_000] == 1.0  # re-ranking every row is exact


@pytest.fixture()
def bench_home() -> Iterator[Path]:
    # Not under pytest's temporary root, which a later pytest run makes 0700: the embedded
    # server's own user (when run as root) must reach its data directory (see conftest.py).
    home = Path(tempfile.mkdtemp(prefix="simsearch-bench-"))
    yield home
    from simsearch.db import embedded

    with contextlib.suppress(Exception):
        embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)


def test_bench_million_runs_on_the_realistic_set(
    model: realistic.Model, tmp_path: Path, bench_home: Path
) -> None:
    model.save(tmp_path / "model.npz")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    command = [sys.executable, "-m", "bench.bench_million", "--data", "realistic"]
    command += ["--rows", "1500", "--queries", "5", "--model", str(tmp_path / "model.npz")]
    command += ["--cache", str(tmp_path / "data"), "--home", str(bench_home)]
    command += ["--add", "500", "--keep-page-cache"]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "realistic" in result.stdout and "hnswlib" in result.stdout
    assert "recall@10 pgvector / hnswlib" in result.stdout
    assert "cold (server restarted)" in result.stdout
    assert "added 500 rows to the indexed set" in result.stdout
