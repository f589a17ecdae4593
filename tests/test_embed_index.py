"""`simsearch embed`, `index` and `demo` on real photos: the default model, real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simsearch.db import connect, feature_sets
from simsearch.demo import edited_copy, sample_photos
from simsearch.embed import embed
from simsearch.manifest import MANIFEST_NAME, read_manifest
from simsearch.model import load_model
from simsearch.pipeline import embedding_model
from simsearch.search import model_for

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "camera")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    all_photos = sample_photos()
    return {name: all_photos[name] for name in PHOTOS}


def make_folder(folder: Path, photos: dict[str, np.ndarray]) -> dict[str, str]:
    """A folder as users have them: subfolders, JPEG and PNG, upper-case extensions, an
    EXIF-rotated photo, a broken file and a non-image. Returns name -> relative path."""
    layout = {}
    for i, (name, array) in enumerate(photos.items()):
        relative = (
            f"{'trip/' if i % 2 else ''}{name}{'.png' if i == 3 else '.JPG' if i == 1 else '.jpg'}"
        )
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(array)
        if name == "coffee":
            # Stored sideways with orientation 6 (rotate 90° clockwise to display): the display
            # is the original photo, so it must embed like it.
            exif = Image.Exif()
            exif[0x0112] = 6
            image.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)
        else:
            image.save(path, quality=92)
        layout[name] = relative
    (folder / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(b"ignored")
    return layout


def sha1_id(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest() + path.suffix.lower()


def read_shards(out: Path) -> tuple[list[str], np.ndarray, list[str]]:
    names = sorted(p.name.split(".")[0] for p in out.glob("*.object_ids.npy"))
    ids = [str(v) for n in names for v in np.load(out / f"{n}.object_ids.npy").tolist()]
    feats = np.concatenate([np.load(out / f"{n}.features.npy") for n in names])
    return ids, feats, names


def test_embed_writes_origin_shards(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    folder = tmp_path / "photos"
    layout = make_folder(folder, photos)
    out = tmp_path / "features"
    report = embed(folder, out, shard_size=3, batch=4)
    assert report.images == len(photos)
    assert len(report.unreadable) == 1 and "broken.jpg" in report.unreadable[0]
    ids, feats, names = read_shards(out)
    assert names == ["0000", "0001", "0002"]  # 8 files in sorted order, 3 a shard, 1 unreadable
    id_array = np.load(out / "0000.object_ids.npy")
    assert id_array.dtype.kind == "U" and id_array.ndim == 1
    assert feats.dtype == np.float32 and feats.shape == (len(photos), 1280)
    order = sorted(layout.values())
    assert ids == [sha1_id(folder / r) for r in order]
    assert all(i.endswith((".jpg", ".png")) for i in ids)  # extension lower-cased
    # The features are what Model.embed_files gives on the same files, same preprocessing.
    model = embedding_model(None)
    assert model.preprocess.draft  # the default model embeds folders with JPEG draft decoding
    expected = model.embed_files([folder / r for r in order])
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)
    manifest = read_manifest(out)
    assert manifest is not None and manifest.model == "builtin:efficientnet-lite0"
    assert manifest.preprocess["draft"] is True and manifest.dimension == 1280
    assert manifest.model_sha256 == model.sha256


def test_embed_full_decode_matches_origin_preprocessing(
    tmp_path: Path, photos: dict[str, np.ndarray]
) -> None:
    folder = tmp_path / "photos"
    layout = make_folder(folder, photos)
    report = embed(folder, tmp_path / "out", decode="full", id_mode="path")
    ids, feats, _ = read_shards(tmp_path / "out")
    assert report.images == len(photos) and ids == sorted(layout.values())
    expected = load_model(None).embed_files([folder / r for r in ids])  # the origin's decoding
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)


def test_embed_resumes(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    folder = tmp_path / "photos"
    make_folder(folder, photos)
    out = tmp_path / "features"
    embed(folder, out, shard_size=3)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.npy")}

    again = embed(folder, out, shard_size=3)  # nothing to do: finished shards are kept
    assert again.images == 0 and again.shards_written == [] and again.shards_kept == 3
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.npy")} == before

    # A crash after the shard files but before the manifest: the shard is made again, the same.
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    del manifest["shards"]["0002"]
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    redo = embed(folder, out, shard_size=3)
    assert redo.shards_written == ["0002"] and redo.images == 2  # immunohistochemistry, rocket
    assert (out / "0002.features.npy").read_bytes() == before["0002.features.npy"][1]
    assert (out / "0002.object_ids.npy").read_bytes() == before["0002.object_ids.npy"][1]

    # New files (and a copy of a known one) go into a new shard; duplicates are not written twice.
    Image.fromarray(photos["rocket"][::-1]).save(folder / "upside-down.jpg", quality=90)
    shutil.copy(folder / "astronaut.jpg", folder / "zz-copy.jpg")
    more = embed(folder, out, shard_size=3)
    assert more.shards_written == ["0003"] and more.images == 1 and more.duplicates == 1
    ids, _, _ = read_shards(out)
    assert len(ids) == len(set(ids)) == len(photos) + 1
    assert not list(out.glob("*.tmp"))


def test_embed_refuses_a_foreign_feature_dir(cli, tmp_path: Path, feature_dir: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "red.jpg")
    result = cli("embed", folder, feature_dir)
    assert result.code == 1 and "did not write" in result.err and "Traceback" not in result.err
    missing = cli("embed", tmp_path / "nope", tmp_path / "out")
    assert missing.code == 1 and "no such image folder" in missing.err


def test_embed_then_ingest_then_query(
    cli,
    empty_db: None,
    tmp_path: Path,
    photos: dict[str, np.ndarray],  # type: ignore[no-untyped-def]
) -> None:
    folder = tmp_path / "photos"
    layout = make_folder(folder, photos)
    out = tmp_path / "features"
    result = cli("embed", folder, out, "--shard-size", "4", "--batch", "3")
    assert result.code == 0, result.err
    assert "embedded 7 images into 2 new shards" in result.out
    assert "skipped 1 unreadable file" in result.out and "broken.jpg" in result.err
    # No --model: ingest takes the model and preprocessing from simsearch.json.
    assert cli("ingest", out, "--feature-set", "shards").code == 0
    with connect.connect() as conn:
        model, preprocess = conn.execute(
            "SELECT model, preprocess FROM feature_sets WHERE name = 'shards'"
        ).fetchone()
    assert model == "builtin:efficientnet-lite0" and preprocess["draft"] is True
    query = tmp_path / "query.jpg"
    edited_copy(photos["chelsea"]).save(query)
    found = cli("query", query, "--feature-set", "shards", "-n", "3")
    assert found.code == 0, found.err
    assert found.lines[0].split()[0] == sha1_id(folder / layout["chelsea"])


def test_index_query_and_reindex(
    cli,
    empty_db: None,
    tmp_path: Path,
    photos: dict[str, np.ndarray],  # type: ignore[no-untyped-def]
) -> None:
    folder = tmp_path / "photos"
    layout = make_folder(folder, photos)
    result = cli("index", folder, "--feature-set", "mine")
    assert result.code == 0, result.err
    assert "added 7 of 8 images" in result.out and "skipped 1 unreadable" in result.out

    with connect.connect() as conn:
        rows = conn.execute(
            """SELECT i.object_id, i.path, i.bytes, i.width, i.height FROM images i
               JOIN embeddings e USING (object_id) JOIN feature_sets f ON f.id = e.feature_set_id
               WHERE f.name = 'mine' ORDER BY i.path"""
        ).fetchall()
        fs_row = conn.execute(
            "SELECT model, model_sha256, preprocess FROM feature_sets WHERE name = 'mine'"
        ).fetchone()
    assert [r[1] for r in rows] == sorted(layout.values())
    for object_id, relative, size, width, height in rows:
        path = folder / relative
        assert object_id == sha1_id(path) and size == path.stat().st_size
        name = Path(relative).stem
        assert (height, width) == photos[name].shape[:2]  # as displayed (coffee is EXIF-rotated)
    assert fs_row[0] == "builtin:efficientnet-lite0" and fs_row[2]["draft"] is True
    assert fs_row[1] == load_model(None).sha256
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, "mine")
    assert fs is not None and model_for(fs, None, None).preprocess.draft  # query decodes alike

    # The query needs only the photo: model and preprocessing come from the feature set.
    for name in ("chelsea", "coffee"):
        query = tmp_path / f"{name}-edited.jpg"
        edited_copy(photos[name]).save(query)
        found = cli("query", query, "--feature-set", "mine", "--json")
        assert found.code == 0, found.err
        assert json.loads(found.out)[0]["object_id"] == sha1_id(folder / layout[name])

    again = cli("index", folder, "--feature-set", "mine")
    assert (
        again.code == 0 and "added 0 of 8 images" in again.out and "7 already indexed" in again.out
    )
    Image.fromarray(photos["rocket"][:, ::-1]).save(folder / "trip" / "mirrored.jpg", quality=90)
    more = cli("index", folder, "--feature-set", "mine")
    assert "added 1 of 9 images" in more.out and "8 images in all" in more.out

    # A feature set keeps its preprocessing: asking for another is refused, in one line.
    refused = cli("index", folder, "--feature-set", "mine", "--decode", "full")
    assert refused.code == 1 and "other preprocessing" in refused.err


def test_index_with_path_ids(cli, empty_db: None, tmp_path: Path, photos) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    layout = make_folder(folder, photos)
    assert cli("index", folder, "--id", "path").code == 0  # feature set named after the folder
    query = tmp_path / "q.jpg"
    edited_copy(photos["astronaut"]).save(query)
    found = cli("query", query, "--feature-set", "photos", "-n", "1")
    assert found.lines[0].split()[0] == layout["astronaut"]


def test_demo_runs_and_finds_the_original(cli, empty_db: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("demo", "--workdir", tmp_path / "demo")
    assert result.code == 0, result.err
    lines = result.lines
    first = next(line for line in lines if line.strip().startswith("1."))
    assert "(chelsea)" in first and "<- the original" in first
    assert any("simsearch query" in line for line in lines)  # says what to try next
    gallery = tmp_path / "demo" / "gallery"
    assert len(list(gallery.glob("*.jpg"))) == 18
    assert all(p.stem == hashlib.sha1(p.read_bytes()).hexdigest() for p in gallery.glob("*.jpg"))
    rerun = cli("demo", "--workdir", tmp_path / "demo")
    assert rerun.code == 0 and "18 already indexed" in rerun.out


def test_bench_embed_runs_on_a_tiny_size(empty_db: None, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_embed.py"
    spec = importlib.util.spec_from_file_location("bench_embed", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--images", "3", "--repeats", "1", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "## Embedding throughput" in out and "simsearch index (end to end" in out
