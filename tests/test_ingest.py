"""Ingest: every shard present, whole shards only, safe to re-run, bad shards refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from simsearch.db import connect


def one_error_line(err: str) -> bool:
    """Exactly one error line; anything else printed is a warning about the directory."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    return len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err


def stored() -> dict[str, object]:
    """Row count, ledger and a checksum over ids and vectors: what 'unchanged' means."""
    with connect.connect() as conn:
        count, digest = conn.execute(
            "SELECT count(*), "
            "md5(string_agg(object_id || embedding::text, ',' ORDER BY object_id)) FROM embeddings"
        ).fetchone()
        ledger = conn.execute("SELECT name, sha256, rows FROM shards ORDER BY name").fetchall()
    return {"rows": count, "digest": digest, "ledger": ledger}


def test_loads_every_shard_and_reports_gap(cli, empty_db, feature_dir):
    shards = sorted(feature_dir.glob("*.features.npy"))
    assert len(shards) > 20
    result = cli("ingest", feature_dir)
    assert result.code == 0, result.err
    assert "missing shard numbers: 0009" in result.err
    state = stored()
    assert len(state["ledger"]) == len(shards)
    assert state["rows"] == sum(len(np.load(p)) for p in shards)
    assert f"loaded {len(shards)} shards" in result.out


def test_rerun_skips_and_changes_nothing(cli, empty_db, feature_dir):
    assert cli("ingest", feature_dir).code == 0
    before = stored()
    again = cli("ingest", feature_dir)
    assert again.code == 0
    assert "skipped" in again.out and "loaded 0 shards" in again.out
    assert stored() == before


def test_feature_set_defaults_to_directory_name(cli, empty_db, feature_dir):
    assert cli("ingest", feature_dir).code == 0
    assert f"feature set {feature_dir.name}:" in cli("db", "status").out


def test_changed_shard_needs_replace(cli, empty_db, feature_dir):
    assert cli("ingest", feature_dir).code == 0
    before = stored()
    features = np.load(feature_dir / "0002.features.npy")
    np.save(feature_dir / "0002.features.npy", features + 1)
    refused = cli("ingest", feature_dir)
    assert refused.code == 1
    assert "0002" in refused.err and "--replace" in refused.err
    assert one_error_line(refused.err)
    assert stored() == before
    replaced = cli("ingest", feature_dir, "--replace")
    assert replaced.code == 0, replaced.err
    assert "replaced 1" in replaced.out
    after = stored()
    assert after["rows"] == before["rows"] and after["digest"] != before["digest"]


def test_unpaired_file_is_reported_not_loaded(cli, empty_db, feature_dir):
    np.save(feature_dir / "0040.object_ids.npy", np.array(["lonely.jpg"]))
    result = cli("ingest", feature_dir)
    assert result.code == 0
    assert "0040.object_ids.npy: no matching .features.npy file" in result.err


def _corrupt(folder: Path, problem: str) -> str:
    """Break shard 0003 in one way; return what the error must mention."""
    ids_path, feats_path = folder / "0003.object_ids.npy", folder / "0003.features.npy"
    ids, feats = np.load(ids_path), np.load(feats_path)
    if problem == "row counts":
        np.save(feats_path, feats[:-1])
        return "expected equal row counts"
    if problem == "dimension":
        np.save(feats_path, feats[:, :-1])
        return "dimension"
    if problem == "nan":
        feats[5, 3] = np.nan
        np.save(feats_path, feats)
        return "row 5 has NaN or Inf"
    if problem == "inf":
        feats[1, 0] = np.inf
        np.save(feats_path, feats)
        return "NaN or Inf"
    if problem == "duplicate id":
        ids[4] = ids[2]
        np.save(ids_path, ids)
        return "appears twice"
    if problem == "id in another shard":
        ids[0] = np.load(folder / "0001.object_ids.npy")[0]
        np.save(ids_path, ids)
        return "shard 0001"
    if problem == "integer features":
        np.save(feats_path, feats.astype(np.int32))
        return "expected float features"
    if problem == "1-D features":
        np.save(feats_path, feats[:, 0])
        return "expected a 2-D array"
    if problem == "object array":
        np.save(ids_path, ids.astype(object), allow_pickle=True)
        return "pickled"
    if problem == "not numpy":
        feats_path.write_bytes(b"hello, not a numpy file")
        return "not a readable .npy file"
    if problem == "truncated":
        feats_path.write_bytes(feats_path.read_bytes()[:200])
        return "not a readable .npy file"
    if problem == "numeric ids":
        np.save(ids_path, np.arange(len(ids)))
        return "expected string object ids"
    if problem == "empty id":
        ids[3] = ""
        np.save(ids_path, ids)
        return "empty object id"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem",
    [
        "row counts",
        "dimension",
        "nan",
        "inf",
        "duplicate id",
        "id in another shard",
        "integer features",
        "1-D features",
        "object array",
        "not numpy",
        "truncated",
        "numeric ids",
        "empty id",
    ],
)
def test_bad_shard_is_one_line_and_changes_nothing(cli, empty_db, feature_dir, tmp_path, problem):
    # Load a healthy copy first, so "nothing changed" is checked against real rows.
    healthy = tmp_path / "healthy"
    shutil.copytree(feature_dir, healthy)
    for path in healthy.glob("000[3-9]*"):
        path.unlink()
    assert cli("ingest", healthy, "--feature-set", feature_dir.name).code == 0
    before = stored()
    expected = _corrupt(feature_dir, problem)
    result = cli("ingest", feature_dir)
    assert result.code == 1
    assert expected in result.err and "0003" in result.err
    assert one_error_line(result.err), result.err
    assert stored() == before


def test_float64_features_are_converted(cli, empty_db, tmp_path):
    folder = tmp_path / "f64"
    folder.mkdir()
    np.save(folder / "0000.object_ids.npy", np.array(["a.jpg", "b.jpg"]))
    np.save(folder / "0000.features.npy", np.array([[0.5, 1.0], [2.0, 3.0]], dtype=np.float64))
    assert cli("ingest", folder).code == 0
    with connect.connect() as conn:
        (vector,) = conn.execute(
            "SELECT embedding FROM embeddings WHERE object_id='b.jpg'"
        ).fetchone()
    np.testing.assert_array_equal(vector.to_numpy(), [2.0, 3.0])


def test_ids_stored_and_returned_exactly(cli, empty_db, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    ids = np.array(
        [
            "it's.jpg",
            'quote".jpg',
            "back\\slash.jpg",
            "a space.jpg",
            "日本語.jpg",
            "x'); DROP TABLE embeddings; --",
        ]
    )
    np.save(folder / "0000.object_ids.npy", ids)
    np.save(folder / "0000.features.npy", np.eye(len(ids), dtype=np.float32))
    assert cli("ingest", folder).code == 0
    from simsearch.search import query_vector

    for row, object_id in enumerate(ids.tolist()):
        assert query_vector(np.eye(len(ids), dtype=np.float32)[row], n=1)[0].object_id == object_id


def test_missing_and_empty_directory(cli, empty_db, tmp_path):
    missing = cli("ingest", tmp_path / "nope")
    assert missing.code == 1 and "no such feature directory" in missing.err
    (tmp_path / "empty").mkdir()
    empty = cli("ingest", tmp_path / "empty")
    assert empty.code == 1 and "no shards found" in empty.err


def test_dimension_must_match_existing_feature_set(cli, empty_db, feature_dir, tmp_path):
    assert cli("ingest", feature_dir, "--feature-set", "fs").code == 0
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "0100.object_ids.npy", np.array(["new.jpg"]))
    np.save(other / "0100.features.npy", np.zeros((1, 8), np.float32))
    result = cli("ingest", other, "--feature-set", "fs")
    assert result.code == 1 and "dimension 8" in result.err and "expects 64" in result.err


def test_feature_sets_of_different_dimensions_coexist(cli, empty_db, feature_dir, tmp_path):
    assert cli("ingest", feature_dir, "--feature-set", "wide").code == 0
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    np.save(narrow / "0000.object_ids.npy", np.array(["n1.jpg", "n2.jpg"]))
    np.save(narrow / "0000.features.npy", np.array([[0, 1, 0], [1, 0, 0]], np.float32))
    assert cli("ingest", narrow).code == 0
    status = cli("db", "status").out
    assert "feature set narrow: 2 rows, dimension 3" in status
    assert "dimension 64" in status
    ambiguous = cli("query", "whatever.jpg")
    assert ambiguous.code == 1 and "several feature sets" in ambiguous.err
