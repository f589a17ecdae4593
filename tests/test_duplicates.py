"""`simsearch duplicates` on real photos and on vectors placed by hand.

Real photos: scikit-image's bundled samples (as `simsearch demo` writes them) and edited copies
made here (JPEG quality 40, half size, a 5% crop, brighter, the same pixels as PNG), plus the
stereo motorcycle's right view (a different photo of the same scene: a hard negative), indexed
with the default model. Pair precision and recall are measured against which photo each file
came from. Vectors by hand (tiny feature sets loaded with `simsearch ingest`) test chaining,
the size cap, resumption and incremental runs exactly.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

EDITED = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "clock")


def _edits(image: Image.Image) -> Iterator[tuple[str, Image.Image, dict[str, object]]]:
    w, h = image.size
    yield "q40.jpg", image, {"quality": 40}
    yield "half.jpg", image.resize((w // 2, h // 2), Image.Resampling.LANCZOS), {"quality": 85}
    dx, dy = int(w * 0.025), int(h * 0.025)
    yield "crop5.jpg", image.crop((dx, dy, w - dx, h - dy)), {"quality": 90}
    yield "brighter.jpg", ImageEnhance.Brightness(image).enhance(1.25), {"quality": 90}
    yield "same-pixels.png", image, {}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The gallery indexed into feature set 'dups'; object id -> the photo it shows."""
    from simsearch.db import connect, feature_sets
    from simsearch.demo import sample_photos, write_gallery
    from simsearch.indexing import index

    folder = tmp_path_factory.mktemp("dups") / "gallery"
    arrays = sample_photos()
    written = write_gallery(folder, arrays)
    copies = folder / "copies"
    copies.mkdir()
    label_of_path = {p.relative_to(folder).as_posix(): name for name, p in written.items()}
    for name in EDITED:
        for suffix, image, options in _edits(Image.fromarray(arrays[name])):
            path = copies / f"{name}-{suffix}"
            image.save(path, **options)
            label_of_path[path.relative_to(folder).as_posix()] = name
    from skimage import data

    right = folder / "stereo_motorcycle-right.jpg"
    Image.fromarray(data.stereo_motorcycle()[1]).save(right, quality=90)
    label_of_path[right.name] = "stereo_motorcycle-right"
    with connect.connect() as conn:
        feature_sets.empty_database(conn)
    index(folder, feature_set="dups")
    with connect.connect() as conn:
        rows = conn.execute("SELECT object_id, path FROM images").fetchall()
    return {"folder": folder, "label": {oid: label_of_path[path] for oid, path in rows}}


def _pairs(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for g in groups for p in itertools.combinations(g, 2)}  # type: ignore[misc]


def precision_recall(report: object, label: dict[str, str]) -> tuple[float, float]:
    groups = [[m.object_id for m in g.members] for g in report.groups]  # type: ignore[attr-defined]
    found = _pairs(groups)
    by_label: dict[str, list[str]] = {}
    for object_id, name in label.items():
        by_label.setdefault(name, []).append(object_id)
    truth = _pairs(list(by_label.values()))
    precision = len(found & truth) / len(found) if found else 1.0
    return precision, len(found & truth) / len(truth)


def test_precision_and_recall_on_real_photos(photos: dict[str, object]) -> None:
    from simsearch.duplicates.finder import find_duplicates

    label = photos["label"]
    assert isinstance(label, dict)
    measured = {}
    for level in ("exact", "strict", "loose"):
        measured[level] = precision_recall(find_duplicates("dups", level), label)
    print("pair precision, recall by level:", measured)  # the closing note quotes these
    precision, recall = measured["strict"]  # the default level
    assert precision >= 0.95 and recall >= 0.85, measured
    assert measured["loose"][1] >= recall
    # No two files have the same bytes and none is EXIF-identical: exact finds nothing wrong.
    assert measured["exact"][0] == 1.0


def test_groups_keep_the_best_copy_and_say_why(photos: dict[str, object], cli: object) -> None:
    result = cli("duplicates", "--feature-set", "dups", "--json")  # type: ignore[operator]
    assert result.code == 0, result.err
    groups = json.loads(result.out)["groups"]
    assert [g["group"] for g in groups] == list(range(1, len(groups) + 1))
    chelsea = next(g for g in groups if any("chelsea-q40" in m["path"] for m in g["members"]))
    keeper = chelsea["members"][0]
    assert keeper["object_id"] == chelsea["keep"] and keeper["distance"] == 0
    # The keeper rule: the most pixels, then the largest file (here the lossless PNG copy).
    best = max((m["width"] * m["height"], m["bytes"]) for m in chelsea["members"])
    assert (keeper["width"] * keeper["height"], keeper["bytes"]) == best
    assert keeper["path"] == "copies/chelsea-same-pixels.png"
    assert chelsea["reason"].startswith("same pixel count (451x300 (0.1 MP)); largest file:")
    for member in chelsea["members"]:
        assert set(member) == {"object_id", "path", "distance", "width", "height", "bytes"}
        assert member["distance"] <= chelsea["diameter"] + 1e-9
    csv = cli("duplicates", "--feature-set", "dups", "--csv")  # type: ignore[operator]
    rows = csv.out.splitlines()
    assert rows[0].startswith("group,level,diameter,keep,reason,object_id,path,distance")
    assert len(rows) - 1 == sum(len(g["members"]) for g in groups)
    plain = cli("duplicates", "--feature-set", "dups")  # type: ignore[operator]
    assert "group 1 (" in plain.out and "copies/" in plain.out and "keep" in plain.out


def test_the_sql_function_returns_the_last_groups(photos: dict[str, object], cli: object) -> None:
    from simsearch.db import connect

    result = cli("duplicates", "--feature-set", "dups", "--json")  # type: ignore[operator]
    groups = json.loads(result.out)["groups"]
    with connect.connect() as conn:
        rows = conn.execute(
            """SELECT d."group", d.object_id, d.keep, i.path
               FROM simsearch_duplicates('dups', 'strict') d JOIN images i USING (object_id)"""
        ).fetchall()
        with pytest.raises(Exception, match="expected level exact, strict or loose"):
            conn.execute("SELECT * FROM simsearch_duplicates('dups', 'nope')")
    assert len(rows) == sum(len(g["members"]) for g in groups)
    assert {r[1] for r in rows if r[2]} == {g["keep"] for g in groups}


def test_move_and_undo(photos: dict[str, object], cli: object, tmp_path: Path) -> None:
    from simsearch.files import sha256_file

    folder = photos["folder"]
    assert isinstance(folder, Path)
    before = {p: sha256_file(p) for p in folder.rglob("*") if p.is_file()}
    moved = cli("duplicates", "--feature-set", "dups", "--move-to", tmp_path / "moved")  # type: ignore[operator]
    assert moved.code == 0, moved.err
    manifest = next((tmp_path / "moved").glob("simsearch-duplicates-*.json"))
    entries = json.loads(manifest.read_text())["moves"]
    assert entries and all(not Path(e["from"]).exists() for e in entries)
    assert all(sha256_file(Path(e["to"])) == e["sha256"] for e in entries)
    again = cli("duplicates", "--feature-set", "dups", "--json")  # type: ignore[operator]
    assert json.loads(again.out)["groups"] == []  # the copies are gone from the folder
    inside = cli("duplicates", "--feature-set", "dups", "--move-to", folder / "x")  # type: ignore[operator]
    assert (
        inside.code == 1 and inside.err.count("\n") == 1 and "inside the image folder" in inside.err
    )
    undone = cli("duplicates", "--undo", manifest)  # type: ignore[operator]
    assert undone.code == 0 and f"moved {len(entries)} file(s) back" in undone.out
    assert {p: sha256_file(p) for p in folder.rglob("*") if p.is_file()} == before
    restored = cli("duplicates", "--feature-set", "dups", "--json")  # type: ignore[operator]
    assert len(json.loads(restored.out)["groups"]) > 0


# --- vectors placed by hand -------------------------------------------------------------------


def load_vectors(
    tmp_path: Path, name: str, vectors: dict[str, list[float]], shard: int = 0
) -> None:
    from simsearch.ingest import ingest

    folder = tmp_path / f"{name}-{shard}"
    folder.mkdir()
    np.save(folder / f"{shard:04d}.object_ids.npy", np.array(list(vectors)))
    np.save(folder / f"{shard:04d}.features.npy", np.array(list(vectors.values()), np.float32))
    ingest(folder, feature_set=name)


def groups_of(report: object) -> list[list[str]]:
    return [sorted(m.object_id for m in g.members) for g in report.groups]  # type: ignore[attr-defined]


def test_groups_never_chain(empty_db: None, tmp_path: Path) -> None:
    from simsearch.duplicates.finder import find_duplicates

    # A~B and B~C within 1.5, A and C 2.0 apart; D, E a separate tight pair.
    load_vectors(
        tmp_path,
        "chain",
        {"a": [0, 0], "b": [1, 0], "c": [2, 0], "d": [10, 10], "e": [10, 10.5], "f": [30, 30]},
    )
    groups = groups_of(find_duplicates("chain", max_distance=1.5))
    assert ["d", "e"] in groups
    assert not any({"a", "c"} <= set(g) for g in groups)
    assert ["a", "b"] in groups or ["b", "c"] in groups


def test_group_size_is_capped(empty_db: None, tmp_path: Path) -> None:
    from simsearch.duplicates.finder import find_duplicates

    load_vectors(tmp_path, "cap", {f"p{i}": [i * 0.01, 0] for i in range(7)})
    capped = groups_of(find_duplicates("cap", max_distance=1, max_group_size=3))
    assert capped and max(len(g) for g in capped) <= 3
    assert len(groups_of(find_duplicates("cap", max_distance=1))[0]) == 7


def _clusters(count: int, seed: int = 5) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    vectors = {}
    for c in range(count):
        centre = rng.normal(0, 10, 8)
        for copy in range(3):
            vectors[f"c{c:03d}-{copy}"] = list(centre + rng.normal(0, 0.05, 8))
    return vectors


def test_an_interrupted_run_continues_and_new_images_alone_are_searched(
    empty_db: None, tmp_path: Path
) -> None:
    from simsearch.db import connect
    from simsearch.duplicates.finder import find_duplicates

    load_vectors(tmp_path, "resume", _clusters(20))

    class Interrupted(Exception):
        pass

    def stop(done: int) -> None:
        if done >= 10:
            raise Interrupted

    with pytest.raises(Interrupted):
        find_duplicates("resume", max_distance=1, batch=5, workers=1, on_batch=stop)
    with connect.connect() as conn:
        row = conn.execute("SELECT count(*) FROM duplicate_searched").fetchone()
    assert row is not None and row[0] == 10  # the two committed batches
    resumed = find_duplicates("resume", max_distance=1, batch=5, workers=2)
    assert resumed.searched == 50  # 60 images, 10 searched before the interruption
    assert len(resumed.groups) == 20 and all(len(g.members) == 3 for g in resumed.groups)
    again = find_duplicates("resume", max_distance=1)
    assert again.searched == 0 and groups_of(again) == groups_of(resumed)
    load_vectors(tmp_path, "resume", {"c000-new": _clusters(20)["c000-0"]}, shard=1)
    later = find_duplicates("resume", max_distance=1)
    assert later.searched == 1
    assert ["c000-0", "c000-1", "c000-2", "c000-new"] in groups_of(later)


def test_hnsw_search_asks_again_when_all_neighbours_are_inside(
    empty_db: None, tmp_path: Path, cli: object
) -> None:
    from simsearch.duplicates import finder

    # 40 copies of one photo: more than FIRST_K neighbours inside the radius each.
    rng = np.random.default_rng(2)
    vectors = {f"x{i:02d}": list(rng.normal(0, 0.01, 16)) for i in range(40)}
    vectors.update({f"y{i:03d}": list(rng.normal(0, 10, 16)) for i in range(200)})
    load_vectors(tmp_path, "many", vectors)
    assert cli("index-build", "--feature-set", "many").code == 0  # type: ignore[operator]
    report = finder.find_duplicates("many", max_distance=1, max_group_size=100)
    assert groups_of(report) == [sorted(f"x{i:02d}" for i in range(40))]
    assert report.pairs == 40 * 39 // 2  # every pair found by the index, none chained in


def test_not_duplicate_is_respected(empty_db: None, tmp_path: Path, cli: object) -> None:
    load_vectors(tmp_path, "nd", {"a": [0, 0], "b": [0.1, 0], "c": [50, 50]})
    first = cli("duplicates", "--feature-set", "nd", "--max-distance", "1", "--json")  # type: ignore[operator]
    assert [len(g["members"]) for g in json.loads(first.out)["groups"]] == [2]
    said = cli("duplicates", "--not-duplicate", "b", "a")  # type: ignore[operator]
    assert said.code == 0 and "not duplicates" in said.out
    later = cli("duplicates", "--feature-set", "nd", "--max-distance", "1", "--json")  # type: ignore[operator]
    assert json.loads(later.out)["groups"] == []
    unknown = cli("duplicates", "--not-duplicate", "a", "zzz")  # type: ignore[operator]
    assert unknown.code == 1 and unknown.err == "error: no image with object id 'zzz'\n"


def test_hard_links_are_not_duplicates_but_copies_are_exact(
    empty_db: None, tmp_path: Path, cli: object
) -> None:
    from simsearch.demo import sample_photos
    from simsearch.indexing import index

    folder = tmp_path / "links"
    folder.mkdir()
    Image.fromarray(sample_photos()["coffee"]).save(folder / "coffee.jpg", quality=90)
    os.link(folder / "coffee.jpg", folder / "coffee-link.jpg")
    index(folder, feature_set="links", id_mode="path")
    linked = cli("duplicates", "--feature-set", "links", "--json")  # type: ignore[operator]
    assert json.loads(linked.out)["groups"] == []
    (folder / "coffee-copy.jpg").write_bytes((folder / "coffee.jpg").read_bytes())
    index(folder, feature_set="links", id_mode="path")
    for level in ("exact", "strict"):
        copied = cli("duplicates", "--feature-set", "links", "--level", level, "--json")  # type: ignore[operator]
        groups = json.loads(copied.out)["groups"]
        # coffee-copy pairs with both names of the linked file, but those two never group.
        assert [g["level"] for g in groups] == ["exact"]
        assert len(groups[0]["members"]) == 2 and "coffee-copy.jpg" in copied.out


def _state(conn: object) -> tuple[int, ...]:
    counts = conn.execute(  # type: ignore[attr-defined]
        """SELECT (SELECT count(*) FROM duplicate_pairs), (SELECT count(*) FROM duplicate_searched),
                  (SELECT count(*) FROM duplicate_files), (SELECT count(*) FROM duplicate_groups),
                  (SELECT count(*) FROM duplicate_decisions)"""
    ).fetchone()
    return tuple(counts)


def test_bad_input_is_one_line_and_changes_nothing(
    empty_db: None, tmp_path: Path, cli: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simsearch.db import connect
    from simsearch.duplicates import finder

    load_vectors(tmp_path, "bad", {f"v{i}": [i, 0] for i in range(12)})
    monkeypatch.setattr(finder, "EXACT_ROWS", 10)  # "large" without loading 10,000 rows
    with connect.connect() as conn:
        before = _state(conn)
    cases = [
        (("--feature-set", "nope"), "no feature set named 'nope'; the database has 'bad'"),
        (
            ("--feature-set", "bad", "--max-distance", "-1"),
            "expected --max-distance to be a distance >= 0, found -1.0",
        ),
        (
            ("--feature-set", "bad"),
            "feature set 'bad' has 12 images and no HNSW index; expected an index",
        ),
        (("--undo", tmp_path / "missing.json"), "missing.json: no such manifest"),
    ]
    for args, message in cases:
        result = cli("duplicates", *args)  # type: ignore[operator]
        assert result.code == 1, args
        assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
        assert message in result.err
        assert "Traceback" not in result.err
    with connect.connect() as conn:
        assert _state(conn) == before


def test_tiny_benchmark_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    home = tmp_path / "home"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bench.bench_duplicates", "--rows", "1500", "--dimension",
             "32", "--data", str(tmp_path), "--home", str(home), "--doc", str(tmp_path / "b.md")],
            cwd=root, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        from simsearch.db import embedded

        embedded.stop(home)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "b.md").read_text()
    assert "## Duplicates" in text and "1,500 images in" in text and "Candidate recall" in text


def test_move_never_touches_files_outside_the_recorded_folders(
    empty_db: None, tmp_path: Path, cli: object
) -> None:
    from simsearch.db import connect
    from simsearch.demo import sample_photos
    from simsearch.indexing import index

    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    photo = Image.fromarray(sample_photos()["chelsea"])
    photo.save(folder / "chelsea.jpg", quality=95)
    photo.save(folder / "chelsea-small.jpg", quality=60)
    index(folder, feature_set="scope", id_mode="path")
    # The copy's record now names a file outside every folder `simsearch index` read.
    (folder / "chelsea-small.jpg").rename(outside / "chelsea-small.jpg")
    with connect.connect() as conn:
        conn.execute(
            "UPDATE images SET path = %s WHERE object_id = 'chelsea-small.jpg'",
            [str(outside / "chelsea-small.jpg")],
        )
    moved = cli("duplicates", "--feature-set", "scope", "--move-to", tmp_path / "moved")  # type: ignore[operator]
    assert moved.code == 0, moved.err
    assert "not under a folder the database records" in moved.err
    assert "moved 0 file(s)" in moved.out
    assert (outside / "chelsea-small.jpg").exists() and (folder / "chelsea.jpg").exists()


def test_without_files_the_levels_use_their_vectors_alone_thresholds(
    empty_db: None, tmp_path: Path
) -> None:
    from simsearch.duplicates.finder import find_duplicates
    from simsearch.duplicates.grouping import LEVELS

    # Shards only: no files to hash. a-b look identical (1.0 <= 1.30); c is 2.84 from both
    # (within strict's vectors-alone 3.05); d is 4.0 from c (within loose's 4.45) but 6.8 from
    # a, so complete linkage leaves it out.
    load_vectors(
        tmp_path,
        "bare",
        {"a": [0, 0], "b": [1, 0], "c": [0.5, 2.8], "d": [0.5, 6.8], "z": [60, 60]},
    )
    assert LEVELS["strict"].vectors_only_distance == 3.05
    assert groups_of(find_duplicates("bare", "exact")) == [["a", "b"]]
    assert groups_of(find_duplicates("bare", "strict")) == [["a", "b", "c"]]
    assert sorted(groups_of(find_duplicates("bare", "loose"))) == [["a", "b", "c"]]
    assert groups_of(find_duplicates("bare", max_distance=5)) == [["a", "b", "c"]]
