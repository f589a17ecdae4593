"""What a new user tripped over (issue 14), each as it happened: real files, real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from simsearch.db import connect, embedded, feature_sets
from simsearch.demo import sample_photos
from simsearch.pipeline import embedding_model
from simsearch.preprocess import on_white
from simsearch.server import process as server_process
from simsearch.server.engine import Engine
from simsearch.server.thumbnails import thumbnail


def sha1_id(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest() + path.suffix.lower()


def copy_images(gallery: list[Path], folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in gallery[start : start + count]]


# --- 1. transparent PNGs ---------------------------------------------------------------------


def cut_out(photo: np.ndarray) -> Image.Image:
    """A sticker: a photo's middle as an opaque disc; outside it alpha 0 over black pixels, as
    the stamps' transparent PNGs hold (what lies under transparent pixels is arbitrary)."""
    image = Image.fromarray(photo).convert("RGB").resize((256, 256))
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).ellipse([40, 40, 216, 216], fill=255)
    black = Image.new("RGB", image.size, (0, 0, 0))
    sticker = Image.composite(image, black, alpha)
    sticker.putalpha(alpha)
    return sticker


def test_transparent_pngs_are_composited_onto_white(
    empty_db: None, tmp_path: Path, cli: Any, origin_model: Path
) -> None:
    photos = sample_photos()
    gallery = tmp_path / "stamps"
    gallery.mkdir()
    for name in ("chelsea", "coffee", "rocket", "astronaut"):
        cut_out(photos[name]).save(gallery / f"{name}.png")
    # The same sticker saved "as JPEG on white" by an editor: what a viewer shows.
    query = tmp_path / "chelsea-on-white.jpg"
    on_white(Image.open(gallery / "chelsea.png")).save(query, quality=95)

    assert cli("index", gallery).code == 0  # the shipped model: composites onto white
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, "stamps")
    assert fs is not None and fs.preprocess["alpha"] == "white"  # recorded, so query does alike
    result = cli("query", query, "-n", "2", "--no-daemon")
    first, second = (line.split() for line in result.lines)
    assert first[0] == sha1_id(gallery / "chelsea.png")
    assert float(first[1]) < 3.0 < float(second[1]), result.out

    # What dropping the alpha channel (the origin's convert("RGB")) made of it: far apart.
    drop = embedding_model(None, alpha="drop")
    flat, sticker = drop.embed_files([query, gallery / "chelsea.png"])
    assert float(np.linalg.norm(flat - sticker)) > 3 * float(first[1])

    # The thumbnail shows white where the sticker is transparent, not the black beneath.
    made = thumbnail(gallery / "chelsea.png", tmp_path / "thumbs", 64)
    assert min(Image.open(made).convert("RGB").getpixel((1, 1))) > 240  # type: ignore[arg-type]

    # Models with the origin's interface keep the origin's convert("RGB"), unless asked.
    assert embedding_model(str(origin_model)).preprocess.alpha == "drop"
    assert embedding_model(str(origin_model), alpha="white").preprocess.alpha == "white"


def transparent(mode: str) -> Image.Image:
    """8x8, the left half transparent (black beneath), the right half opaque grey (128)."""
    grey = Image.new("L", (8, 8), 0)
    grey.paste(128, (4, 0, 8, 8))
    alpha = Image.new("L", (8, 8), 0)
    alpha.paste(255, (4, 0, 8, 8))
    if mode == "P":  # a palette whose colour 0 is transparent, as GIFs and small PNGs have
        image = grey.convert("P")
        image.info["transparency"] = image.getpixel((0, 0))
        return image
    image = grey.convert(mode.rstrip("A"))
    image.putalpha(alpha)
    return image


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_each_kind_of_transparency_is_composited(mode: str, tmp_path: Path) -> None:
    from simsearch.preprocess import open_image

    path = tmp_path / "sticker.png"
    transparent(mode).save(path)
    white = open_image(path, alpha="white")
    dropped = open_image(path)  # the origin's convert("RGB")
    assert white.getpixel((0, 0)) == (255, 255, 255) and white.getpixel((7, 7)) == (128,) * 3
    assert dropped.getpixel((0, 0)) == (0, 0, 0) and dropped.getpixel((7, 7)) == (128,) * 3


# --- 2 and 7. paths belong to folders; --prune ----------------------------------------------


def test_the_same_file_in_two_folders_resolves_from_either(
    empty_db: None, tmp_path: Path, cli: Any, gallery: list[Path], origin_model: Path
) -> None:
    first = copy_images(gallery, tmp_path / "first", 3)
    second = copy_images(gallery, tmp_path / "second", 2, start=3)
    copy = Path(shutil.copy(first[0], tmp_path / "second" / f"copy{first[0].suffix}"))
    oid = sha1_id(first[0])
    assert cli("index", tmp_path / "first", "--model", origin_model).code == 0
    assert cli("index", tmp_path / "second", "--model", origin_model).code == 0

    engine = Engine()
    engine.open()
    try:
        assert engine.image_file(oid) in (first[0].resolve(), copy.resolve())
        # The second folder dropped and moved away: the first still has the file.
        assert cli("drop", "second").code == 0
        (tmp_path / "second").rename(tmp_path / "moved")
        assert engine.image_file(oid) == first[0].resolve()
    finally:
        engine.close()
    with connect.connect() as conn:
        row = conn.execute("SELECT path FROM images WHERE object_id = %s", [oid]).fetchone()
    assert row == (first[0].name,)  # images.path too: a path of a file still recorded
    paths = cli("query", first[0], "-n", "1", "--paths", "--no-daemon")
    assert paths.code == 0 and paths.out.split()[0] == str(first[0].resolve())
    assert second  # (two more images that went with the folder)


def test_index_prune_forgets_files_that_are_gone(
    empty_db: None, tmp_path: Path, cli: Any, gallery: list[Path], origin_model: Path
) -> None:
    folder = tmp_path / "album"
    files = copy_images(gallery, folder, 4)
    twin = Path(shutil.copy(files[1], folder / f"twin{files[1].suffix}"))
    other = copy_images(gallery, tmp_path / "other", 1, start=10)[0]
    shutil.copy(files[2], tmp_path / "other" / f"shared{files[2].suffix}")  # in another folder
    assert cli("index", folder, "--feature-set", "fs", "--model", origin_model).code == 0
    assert cli("index", tmp_path / "other", "--feature-set", "fs").code == 0
    for gone in (files[0], twin, files[2]):
        gone.unlink()
    rewritten = sha1_id(files[3])
    files[3].write_bytes(gallery[11].read_bytes())  # the same name, other bytes

    kept = cli("index", folder, "--feature-set", "fs")  # without --prune: said, not done
    assert kept.code == 0 and "3 files gone from the folder (--prune forgets them)" in kept.out
    pruned = cli("index", folder, "--feature-set", "fs", "--prune")
    # files[0] goes; twin's image is still files[1]; files[2]'s is still in the other folder.
    assert pruned.code == 0, pruned.err
    assert "pruned 3 files gone from the folder (2 rows removed)" in pruned.out, pruned.out
    with connect.connect() as conn:
        fs = feature_sets.resolve(conn, "fs")
        ids = feature_sets.object_ids(conn, fs)
    assert sha1_id(other) in ids and sha1_id(files[1]) in ids and sha1_id(files[3]) in ids
    assert rewritten not in ids  # its file holds other bytes now
    assert len(ids) == 4  # files[1], files[2] (in the other folder too), files[3] anew, other
    assert cli("index", folder, "--feature-set", "fs", "--prune").out.count("gone") == 0


# --- 6, 8, 9, 10. the command line ------------------------------------------------------------


@pytest.fixture()
def album(
    empty_db: None, tmp_path: Path, cli: Any, gallery: list[Path], origin_model: Path
) -> Path:
    folder = tmp_path / "album"
    copy_images(gallery, folder, 12)
    assert cli("index", folder, "--model", origin_model).code == 0
    return folder


def test_query_paths_and_json_carry_files(album: Path, cli: Any) -> None:
    photo = sorted(album.iterdir())[0]
    plain = cli("query", photo, "-n", "3", "--no-daemon")
    paths = cli("query", photo, "-n", "3", "--paths", "--no-daemon")
    assert plain.lines[0].split()[0] == sha1_id(photo)
    assert paths.lines[0].split()[0] == str(photo.resolve())
    assert all(Path(line.split()[0]).is_file() for line in paths.lines)
    rows = json.loads(cli("query", photo, "-n", "3", "--json", "--no-daemon").out)
    assert rows[0]["path"] == str(photo.resolve()) and all("path" in r for r in rows)
    many = cli("query", "--id", sha1_id(photo), "-n", "2", "--paths")
    assert many.code == 0 and all(Path(line.split()[0]).is_file() for line in many.lines)


def test_silent_mistakes_are_named(album: Path, cli: Any) -> None:
    photo = sorted(album.iterdir())[0]
    assert cli("meta", "import", _meta_file(album, photo)).code == 0
    wrong = cli("query", photo, "--where", "colour=red", "--no-daemon")
    assert wrong.code == 1 and wrong.err.count("\n") == 1, wrong.err
    assert "'colour'" in wrong.err and "color" in wrong.err and "width" in wrong.err
    right = cli("query", photo, "--where", "color=red", "--no-daemon")
    assert right.code == 0 and right.lines[0].split()[0] == sha1_id(photo)
    rare = cli("query", photo, "--where", "color=blue", "--no-daemon")
    assert rare.code == 0 and rare.out == ""  # a known key without matches is an answer

    as_path = cli("delete", photo)
    assert as_path.code == 1 and as_path.err.count("\n") == 1
    assert f"is a path: the image's object id is {sha1_id(photo)}" in as_path.err
    unknown = cli("delete", "nosuch.jpg")
    assert unknown.code == 1 and "no image with object id 'nosuch.jpg'" in unknown.err

    both = json.loads(cli("eval", "--sample", "5", "--ef", "10", "--ef", "40", "--json").out)
    assert [run["ef_search"] for run in both["settings"]] == [10, 40]


def _meta_file(album: Path, photo: Path) -> Path:
    path = album.parent / "meta.jsonl"
    path.write_text(json.dumps({"object_id": sha1_id(photo), "color": "red"}) + "\n")
    return path


def test_messages_say_what_to_do(empty_db: None, tmp_path: Path, cli: Any, gallery: list[Path],
                                 origin_model: Path) -> None:  # fmt: skip
    empty = cli("query", gallery[0], "--no-daemon")
    assert "simsearch index PHOTO_DIR" in empty.err and "simsearch ingest FEATURE_DIR" in empty.err
    typo = cli("query", gallery[0], "--exakt")
    assert typo.code == 2 and "usage: simsearch query" in typo.err and "--exakt" in typo.err

    folder = tmp_path / "photos"
    copy_images(gallery, folder, 3)
    again = f"again{gallery[0].suffix}"  # object ids are SHA-1 and extension: the same id
    shutil.copy(folder / gallery[0].name, folder / again)
    first = cli("index", folder, "--model", origin_model)
    assert "added 3 of 4 images" in first.out and "skipped 1 duplicate file;" in first.out
    # The copy is named, and the file it copies (the one first in sorted order).
    original, copy = sorted([again, gallery[0].name])
    assert f"duplicate: {copy} (same bytes as {original})" in first.err
    rerun = cli("index", folder)
    assert "3 already indexed; skipped 1 duplicate file; 3 images in all" in rerun.out, rerun.out

    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "0000.object_ids.npy", np.array(["one.jpg"]))
    np.save(shards / "0000.features.npy", np.ones((1, 64), np.float32))
    loaded = cli("ingest", shards, "--no-index")
    assert "loaded 1 shard (1 row)" in loaded.out and "; 1 row in all" in loaded.out
    status = cli("db", "status")
    assert "feature set shards: 1 row, dimension 64, 1 shard," in status.out
    assert "deleted 1 row from every feature set and 1 image" in cli("delete", "one.jpg").out


def test_a_huge_n_is_answered_and_leaves_the_server_log_clean(
    album: Path, cli: Any, simsearch_home: Path
) -> None:
    photo = sorted(album.iterdir())[0]
    assert cli("index-build").code == 0  # the HNSW path, whose ef_search stops at 1000
    log = embedded.pgdata(simsearch_home) / "log"
    before = log.stat().st_size
    plain = cli("query", photo, "-n", "100000", "--no-daemon")
    filtered = cli("query", photo, "-n", "100000", "--where", "width>=1", "--no-daemon")
    similar = cli("query", "--id", sha1_id(photo), "-n", "100000")  # simsearch_knn, indexed
    assert plain.code == filtered.code == similar.code == 0, filtered.err + similar.err
    assert len(plain.lines) == len(filtered.lines) == 12 and len(similar.lines) == 11
    with log.open("rb") as handle:
        handle.seek(before)
        written = handle.read().decode(errors="replace")
    assert "ef_search" not in written and "ERROR" not in written, written


# --- 3, 5, 11. the server -----------------------------------------------------------------


def test_serve_takes_over_from_an_on_demand_server(
    album: Path, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_server import start_server, stop_server

    monkeypatch.delenv("SIMSEARCH_NO_DAEMON")
    photo = sorted(album.iterdir())[0]
    # `query` first, as the README has it: it starts a server on demand...
    first = cli("query", photo, "-n", "2", "--paths")
    auto = server_process.running()
    assert first.code == 0 and auto is not None and auto["auto"], first.err
    assert first.lines[0].split()[0] == str(photo.resolve())  # --paths through the server too
    # ... and `serve` then takes over instead of refusing.
    log = tmp_path / "serve.log"
    process, info = start_server("--port", "0", log=log)
    try:
        assert info["pid"] != auto["pid"] and not info.get("auto")
        assert f"pid {auto['pid']}" in log.read_text()
        again = cli("query", photo, "-n", "2", "--json")
        assert json.loads(again.out)[0]["path"] == str(photo.resolve())
    finally:
        stop_server(process)


def test_docs_work_offline_and_serve_reconnects_after_a_database_restart(
    album: Path, tmp_path: Path, simsearch_home: Path
) -> None:
    from test_server import start_server, stop_server

    process, info = start_server("--port", "0", log=tmp_path / "serve.log")
    url = info["url"].rstrip("/")
    try:
        page = _get(url + "/docs")
        assert page[0] == 200 and "/similar/{object_id}" in page[1] and "ef" in page[1]
        assert "cdn" not in page[1].lower() and "https://" not in page[1]
        assert _get(url + "/feature-sets")[0] == 200
        # The embedded PostgreSQL stops and starts again (on whatever port it gets).
        assert embedded.stop(simsearch_home)
        connect.conninfo()  # any command starts it again
        assert _get(url + "/feature-sets")[0] == 200
        assert _get(url + "/similar/" + sha1_id(sorted(album.iterdir())[0]))[0] == 200
    finally:
        stop_server(process)


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
