"""The database answers what the exact NumPy scan answers, and the scan answers what the origin's
algorithm answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data import read_all, write_images

from simsearch.model import load_model


def origin_algorithm(feature_dir: Path, query: np.ndarray, limit: int) -> list[tuple[str, float]]:
    """The origin's search.py, re-written independently: per shard, tile the query, take
    np.linalg.norm of the difference, argsort, keep the top `limit`; then sort all candidates.
    Unlike the origin (which stopped at the first missing number below 20) it visits every
    shard present."""
    results: list[tuple[str, float]] = []
    numbers = sorted(int(p.name.split(".")[0]) for p in feature_dir.glob("*.object_ids.npy"))
    for number in numbers:
        object_ids = np.load(feature_dir / f"{number:04d}.object_ids.npy")
        features = np.load(feature_dir / f"{number:04d}.features.npy")
        assert len(object_ids) == len(features)
        distances = np.linalg.norm(np.tile(query, (len(features), 1)) - features, axis=1)
        best = np.argsort(distances)[:limit]
        results.extend(zip(object_ids[best].tolist(), distances[best].tolist(), strict=True))
    return sorted(results, key=lambda item: item[1])[:limit]


def parse(lines: list[str]) -> list[tuple[str, float]]:
    pairs = []
    for line in lines:
        object_id, distance = line.rsplit(" ", 1)
        pairs.append((object_id, float(distance)))
    return pairs


def same_answer(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [x[0] for x in a] == [x[0] for x in b]
    np.testing.assert_allclose([x[1] for x in a], [x[1] for x in b], rtol=1e-5, atol=1e-6)


@pytest.fixture()
def query_images(gallery: list[Path], tmp_path: Path) -> list[Path]:
    """Three images whose features are stored and three that are not."""
    return gallery[:3] + write_images(tmp_path, 3, seed=99)


def test_scan_equals_origin_algorithm(cli, feature_dir, origin_model, query_images):
    model = load_model(str(origin_model))
    for image in query_images:
        result = cli("scan", feature_dir, image, "--model", origin_model)
        assert result.code == 0, result.err
        (vector,) = model.embed_files([image])
        same_answer(parse(result.lines), origin_algorithm(feature_dir, vector, 10))


def test_query_equals_scan_exact_and_default(
    cli, empty_db, feature_dir, origin_model, query_images
):
    loaded = cli("ingest", feature_dir, "--model", origin_model)
    assert loaded.code == 0, loaded.err
    for image in query_images:
        reference = parse(cli("scan", feature_dir, image, "--model", origin_model).lines)
        for extra in (["--exact"], []):
            result = cli("query", image, *extra)
            assert result.code == 0, result.err
            same_answer(parse(result.lines), reference)
    # A stored image finds itself first, at distance zero, as in the origin's example.
    first = parse(cli("query", query_images[0]).lines)[0]
    assert first == (query_images[0].name, 0.0)


def test_ann_index_query_matches_scan(cli, empty_db, feature_dir, origin_model, query_images):
    assert cli("ingest", feature_dir, "--model", origin_model, "--no-index").code == 0
    built = cli("index-build")
    assert built.code == 0, built.err
    assert "index hnsw" in cli("db", "status").out
    for image in query_images:
        reference = parse(cli("scan", feature_dir, image, "--model", origin_model).lines)
        same_answer(parse(cli("query", image, "-n", "5").lines), reference[:5])


def test_every_row_is_stored_exactly(empty_db, cli, feature_dir, origin_model):
    assert cli("ingest", feature_dir, "--model", origin_model).code == 0
    from simsearch.db import connect

    ids, features = read_all(feature_dir)
    with connect.connect() as conn:
        rows = conn.execute(
            "SELECT object_id, embedding FROM embeddings ORDER BY object_id"
        ).fetchall()
    stored = {object_id: vector.to_numpy() for object_id, vector in rows}
    assert len(stored) == len(ids)
    for object_id, feature in zip(ids.tolist(), features, strict=True):
        np.testing.assert_array_equal(stored[object_id], feature)


def test_nchw_model_with_other_names_and_size(cli, empty_db, tmp_path, gallery, nchw_model):
    from data import write_shards

    model = load_model(str(nchw_model))
    assert model.interface.input_name == "pixels"
    assert model.interface.output_name == "embedding"
    assert (model.preprocess.layout, model.preprocess.width, model.preprocess.height) == (
        "NCHW",
        96,
        96,
    )
    features = model.embed_files(gallery)
    feature_dir = write_shards(
        tmp_path / "nchw", [p.name for p in gallery], features, extra_rows=500, sizes=[200, 77]
    )
    assert cli("ingest", feature_dir, "--model", nchw_model, "--feature-set", "small").code == 0
    result = cli("query", gallery[5], "--feature-set", "small", "-n", "3")
    assert result.code == 0, result.err
    reference = parse(cli("scan", feature_dir, gallery[5], "--model", nchw_model, "-n", "3").lines)
    same_answer(parse(result.lines), reference)
    assert reference[0] == (gallery[5].name, 0.0)


def test_overrides_change_what_is_read(tmp_path, gallery, nchw_model):
    from simsearch.model import Overrides

    model = load_model(str(nchw_model), Overrides(width=64, height=48))
    assert (model.preprocess.width, model.preprocess.height) == (64, 48)
    with pytest.raises(Exception, match="no input named"):
        load_model(str(nchw_model), Overrides(input_name="nope"))


def test_json_output(cli, empty_db, feature_dir, origin_model, gallery):
    import json

    assert cli("ingest", feature_dir, "--model", origin_model).code == 0
    result = cli("query", gallery[1], "--json", "-n", "4")
    rows = json.loads(result.out)
    # Rows always carry path: null here, where the rows came from shards and no file is known.
    assert [set(r) for r in rows] == [{"object_id", "distance", "path"}] * 4
    assert {r["path"] for r in rows} == {None}
    assert rows[0]["object_id"] == gallery[1].name
