"""`simsearch meta import` (CSV and JSON lines) and batch image queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _images(object_ids: list[str]) -> dict[str, tuple[Any, ...]]:
    from simsearch.db import connect

    with connect.connect() as conn:
        rows = conn.execute(
            """SELECT object_id, path, bytes, width, height, added_at, meta FROM images
               WHERE object_id = ANY(%s)""",
            [object_ids],
        ).fetchall()
        conn.commit()
    return {r[0]: r[1:] for r in rows}


def test_csv_upserts_columns_and_meta(empty_db: None, cli: Any, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text(
        "object_id,path,width,height,bytes,color,rating,code,added_at\n"
        "a.jpg,x/a.jpg,640,480,1234,red,5,007,2026-01-02\n"
        "b.jpg,,800,600,,blue,4.5,,\n"
        ",x/c.jpg,1,1,1,red,1,,\n"
        "d.jpg,x/d.jpg,wide,1,1,red,1,,\n"
        "e.jpg,x/e.jpg,10,-3,1,red,1,,\n"
        "f.jpg,x/f.jpg,10,10,1,red,1,,not-a-date\n"
        "g.jpg,x/g.jpg\n"
    )
    result = cli("meta", "import", first)
    assert result.code == 0, result.err
    assert "0 rows matched existing images, 3 added, 4 rejected" in result.out
    rejected = result.err.splitlines()
    assert len(rejected) == 4
    assert rejected[0].startswith("rejected row 4: expected a non-empty object_id")
    assert "row 5: expected width to be a whole number" in rejected[1]
    assert "row 6: expected height to be a whole number >= 0, found '-3'" in rejected[2]
    assert "row 7: expected added_at as an ISO date" in rejected[3]
    rows = _images(["a.jpg", "b.jpg", "g.jpg"])
    path, size, width, height, added_at, meta = rows["a.jpg"]
    assert (path, size, width, height) == ("x/a.jpg", 1234, 640, 480)
    assert added_at.isoformat().startswith("2026-01-02T00:00:00")
    assert meta == {"color": "red", "rating": 5, "code": "007"}  # numbers typed, "007" text
    assert rows["b.jpg"][0] is None and rows["b.jpg"][5] == {"color": "blue", "rating": 4.5}
    assert rows["g.jpg"][0] == "x/g.jpg" and rows["g.jpg"][5] == {}

    second = tmp_path / "second.jsonl"
    lines = [
        {"object_id": "a.jpg", "rating": 2, "tags": ["cat", "dog"]},  # merges; path kept
        {"object_id": "h.jpg", "meta": {"nested": {"k": 1}}, "width": 10},
        "not json",
        [1, 2],
        {"object_id": "a.jpg", "title": "later wins"},
    ]
    second.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    result = cli("meta", "import", second)
    assert result.code == 0, result.err
    assert "1 rows matched existing images, 1 added, 2 rejected" in result.out
    assert "line 3: not valid JSON" in result.err and "line 4: expected a JSON object" in result.err
    rows = _images(["a.jpg", "h.jpg"])
    assert rows["a.jpg"][0] == "x/a.jpg"
    assert rows["a.jpg"][5] == {
        "color": "red",
        "rating": 2,
        "code": "007",
        "tags": ["cat", "dog"],
        "title": "later wins",
    }
    assert rows["h.jpg"][5] == {"nested": {"k": 1}} and rows["h.jpg"][2] == 10


def test_bad_files(empty_db: None, cli: Any, tmp_path: Path) -> None:
    missing = cli("meta", "import", tmp_path / "none.csv")
    assert missing.code == 1 and "no such file" in missing.err
    headless = tmp_path / "h.csv"
    headless.write_text("id,color\na,red\n")
    result = cli("meta", "import", headless)
    assert result.code == 1 and "expected a header row with an object_id column" in result.err
    other = tmp_path / "m.xml"
    other.write_text("<x/>")
    result = cli("meta", "import", other)
    assert result.code == 1 and "expected a .csv or .jsonl file" in result.err


def test_hostile_values_are_data(empty_db: None, cli: Any, tmp_path: Path) -> None:
    hostile = "x'); DROP TABLE images; --"
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"object_id": hostile, hostile: hostile, "path": hostile}) + "\n")
    result = cli("meta", "import", path)
    assert result.code == 0 and "1 added" in result.out
    assert _images([hostile])[hostile][5] == {hostile: hostile}


def test_batch_queries(
    empty_db: None,
    cli: Any,
    feature_dir: Path,
    gallery: list[Path],
    origin_model: Path,
    tmp_path: Path,
) -> None:
    assert cli("ingest", feature_dir, "--feature-set", "g", "--model", origin_model).code == 0
    singles = {}
    for image in gallery[:3]:
        result = cli("query", image, "-n", "4", "--exact", "--no-daemon")
        assert result.code == 0, result.err
        singles[str(image)] = result.lines
        assert len(result.lines) == 4 and not result.out.startswith("#")
    batch = cli("query", *gallery[:3], "-n", "4", "--exact")
    assert batch.code == 0, batch.err
    blocks = [b.strip().splitlines() for b in batch.out.split("\n\n")]
    assert [b[0] for b in blocks] == [f"# {p}" for p in gallery[:3]]
    assert all(b[1:] == singles[b[0][2:]] for b in blocks)
    as_json = cli("query", *gallery[:3], "-n", "4", "--exact", "--json")
    objects = [json.loads(line) for line in as_json.lines]
    assert [o["image"] for o in objects] == [str(p) for p in gallery[:3]]
    for o in objects:
        expected = [line.split()[0] for line in singles[o["image"]]]
        assert [r["object_id"] for r in o["results"]] == expected
        assert np.allclose(
            [r["distance"] for r in o["results"]],
            [float(line.split()[1]) for line in singles[o["image"]]],
            rtol=1e-6,
        )
    folder = tmp_path / "queries"
    folder.mkdir()
    for image in gallery[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    result = cli("query", folder, "-n", "2", "--exact")
    headers = [line for line in result.lines if line.startswith("# ")]
    assert headers == [f"# {folder / name}" for name in sorted(p.name for p in gallery[:2])]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("query", empty)
    assert result.code == 1 and "no image files under" in result.err
