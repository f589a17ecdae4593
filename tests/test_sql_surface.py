"""The SQL functions, filtered search, query by id, and delete/drop, against the exact answer.

One generated feature set ('photos', 8,000 clustered 64-d rows, HNSW index built with
`simsearch index-build`) with metadata loaded by `simsearch meta import`; the oracle is NumPy
over the same vectors and metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data import write_shards
from psycopg.types.json import Jsonb

README = Path(__file__).resolve().parents[1] / "README.md"
KNOWN_ID = "5577b063d1f4c2e9a8b7c6d5e4f3a2b1c0d9a360.jpg"  # the README's examples use it
ROWS, DIM = 8000, 64
START = datetime(2025, 12, 1, tzinfo=UTC)


class Photos:
    """The generated data and the exact oracle over it."""

    def __init__(self, folder: Path) -> None:
        rng = np.random.default_rng(11)
        centers = rng.standard_normal((40, DIM)).astype(np.float32) * 2
        self.vectors = (
            centers[rng.integers(0, 40, ROWS)] + rng.standard_normal((ROWS, DIM)).astype(np.float32)
        ).astype(np.float32)
        self.ids = [KNOWN_ID] + [f"{rng.bytes(20).hex()}.jpg" for _ in range(ROWS - 1)]
        self.meta: list[dict[str, Any]] = []
        self.columns: list[dict[str, Any]] = []
        for j in range(ROWS):
            self.meta.append(
                {
                    "color": "red" if j % 2 == 0 else "blue",
                    "bucket": (j * 7919) % 1000,
                    "rating": j % 5 + 1,
                }
            )
            self.columns.append(
                {"width": 100 + (j * 37) % 2000, "added_at": START + timedelta(days=j % 90)}
            )
        self.features = write_shards(folder / "features", self.ids, self.vectors, sizes=[2000])
        # write_shards shuffles: read back the stored order's vectors by id.
        self.index = {object_id: j for j, object_id in enumerate(self.ids)}

    def matches(self, where: dict[str, Any]) -> np.ndarray:
        keep = np.ones(ROWS, bool)
        for key, ops in where.items():
            ops = ops if isinstance(ops, dict) else {"=": ops}
            for op, bound in ops.items():
                for j in range(ROWS):
                    if keep[j]:
                        keep[j] = _holds(self._value(j, key), op, bound)
        return keep

    def _value(self, j: int, key: str) -> Any:
        if key == "added_at":
            return self.columns[j]["added_at"]
        if key in self.columns[j]:
            return self.columns[j][key]
        return self.meta[j].get(key)

    def exact(
        self,
        query: np.ndarray,
        k: int,
        where: dict[str, Any] | None = None,
        exclude: str | None = None,
    ) -> list[str]:
        keep = self.matches(where or {})
        if exclude is not None:
            keep[self.index[exclude]] = False
        distances = np.linalg.norm(self.vectors - query, axis=1)
        distances[~keep] = np.inf
        order = np.argsort(distances, kind="stable")[:k]
        return [self.ids[j] for j in order if np.isfinite(distances[j])]


def _holds(value: Any, op: str, bound: Any) -> bool:
    if value is None:
        return op == "!="
    if isinstance(value, datetime):
        bound = datetime.fromisoformat(bound)
        if bound.tzinfo is None:
            bound = bound.replace(tzinfo=UTC)
    return {
        "=": value == bound,
        "!=": value != bound,
        "<": value < bound,
        "<=": value <= bound,
        ">": value > bound,
        ">=": value >= bound,
    }[op]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, simsearch_home: Path) -> Iterator[Photos]:
    from conftest import run_cli

    from simsearch.db import connect, feature_sets

    with connect.connect() as conn:
        feature_sets.empty_database(conn)
    folder = tmp_path_factory.mktemp("photos")
    data = Photos(folder)
    result = run_cli("ingest", data.features, "--feature-set", "photos", "--no-index")
    assert result.code == 0, result.err
    result = run_cli("index-build", "--feature-set", "photos")
    assert result.code == 0, result.err
    records = folder / "meta.jsonl"
    with records.open("w") as handle:
        for j, object_id in enumerate(data.ids):
            row = {"object_id": object_id, "path": f"p/{j}.jpg", **data.meta[j]}
            row["width"] = data.columns[j]["width"]
            row["added_at"] = data.columns[j]["added_at"].isoformat()
            handle.write(json.dumps(row) + "\n")
    result = run_cli("meta", "import", records)
    assert result.code == 0, result.err
    assert f"{ROWS:,} rows matched existing images, 0 added, 0 rejected" in result.out
    yield data


@pytest.fixture()
def conn(photos: Photos) -> Iterator[Any]:
    from simsearch.db import connect

    with connect.connect() as connection:
        yield connection
        connection.rollback()


def _queries(photos: Photos, count: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, ROWS, count)
    return photos.vectors[picks] + 0.5 * rng.standard_normal((count, DIM)).astype(np.float32)


def _knn(conn: Any, query: np.ndarray, k: int, where: Any = None, exact: bool = False) -> list[str]:
    rows = conn.execute(
        "SELECT object_id FROM simsearch_knn('photos', %s, %s, %s, %s)",
        [query, k, Jsonb(where) if where is not None else None, exact],
    ).fetchall()
    return [r[0] for r in rows]


def test_knn_exact_equals_oracle(photos: Photos, conn: Any) -> None:
    for query in _queries(photos, 5):
        assert _knn(conn, query, 10, exact=True) == photos.exact(query, 10)
        rows = conn.execute(
            "SELECT distance FROM simsearch_knn('photos', %s, 10, exact => true)", [query]
        ).fetchall()
        expected = np.sort(np.linalg.norm(photos.vectors - query, axis=1))[:10]
        assert np.allclose([r[0] for r in rows], expected, rtol=1e-5)


def test_knn_uses_index_and_recall(photos: Photos, conn: Any) -> None:
    hits = 0
    queries = _queries(photos, 20)
    for query in queries:
        got = _knn(conn, query, 10)
        assert len(got) == 10
        hits += len(set(got) & set(photos.exact(query, 10)))
    assert hits / (10 * len(queries)) >= 0.95
    plan = _explain(conn, "SELECT * FROM simsearch_knn('photos', %s, 10)", [queries[0]])
    assert "index scan" in plan[0] and any("embeddings_hnsw_" in line for line in plan)


def _plan_nodes(lines: list[str]) -> list[str]:
    """A plan's node types, top down ("Limit", "Sort", "Index Scan", ...), without costs."""
    nodes = []
    for line in lines:
        text = line.strip().removeprefix("->").strip()
        node = re.match(r"^([A-Z][A-Za-z ]+?)(?: using| on|  \(|\s*$)", text)
        if node and "=" not in text.split("(")[0]:
            nodes.append(node.group(1).strip())
    return nodes


def test_python_knn_and_the_sql_function_share_plan_and_answers(photos: Photos, conn: Any) -> None:
    """The kNN statement is built in Python (db/knn.py) and written again in the plpgsql of
    migration 0002: both walk the same HNSW index the same way, and answer the same."""
    from simsearch.db import feature_sets, knn

    fs = feature_sets.resolve(conn, "photos")
    assert fs.indexed
    for query in _queries(photos, 5, seed=21):
        python = knn.knn(conn, fs, query, 10)
        sql = conn.execute(
            "SELECT object_id, distance FROM simsearch_knn('photos', %s, 10)", [query]
        ).fetchall()
        assert [(m.object_id, m.distance) for m in python] == [(o, d) for o, d in sql]
        exact = knn.knn(conn, fs, query, 10, exact=True)
        sql_exact = conn.execute(
            "SELECT object_id, distance FROM simsearch_knn('photos', %s, 10, exact => true)",
            [query],
        ).fetchall()
        assert [(m.object_id, m.distance) for m in exact] == [(o, d) for o, d in sql_exact]
    query = _queries(photos, 1, seed=22)[0]
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.ef_search = 200")
        python_plan = [
            row[0]
            for row in conn.execute(
                b"EXPLAIN " + knn.statement(fs, exact=False).as_bytes(conn),
                [query, query, 100, 10],
            ).fetchall()
        ]
    function_plan = _explain(conn, "SELECT * FROM simsearch_knn('photos', %s, 10)", [query])[1:]
    assert _plan_nodes(python_plan) == _plan_nodes(function_plan)
    assert any(f"Index Scan using {fs.index_name}" in line for line in python_plan)
    assert any(f"Index Scan using {fs.index_name}" in line for line in function_plan)


def _explain(conn: Any, query: str, params: list[Any]) -> list[str]:
    notices: list[str] = []
    handler: Callable[[Any], None] = lambda d: notices.append(d.message_primary)  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        conn.execute("SET simsearch.explain = on")
        conn.execute(query, params).fetchall()
        conn.execute("RESET simsearch.explain")
    finally:
        conn.remove_notice_handler(handler)
    return notices


FILTERS = [
    ({"bucket": {"<": 500}}, "50%"),
    ({"bucket": {"<": 100}}, "10%"),
    ({"bucket": {"<": 10}}, "1%"),
    ({"bucket": {"<": 1}}, "0.1%"),
    ({"color": "red", "width": {">=": 1024}}, "meta and column"),
    ({"added_at": {">=": "2026-01-01", "<": "2026-01-15"}, "rating": {"!=": 3}}, "dates"),
]


@pytest.mark.parametrize("exact_below", ["1", "10000", "100000000"], ids=["index", "auto", "scan"])
@pytest.mark.parametrize(("where", "label"), FILTERS, ids=[f[1] for f in FILTERS])
def test_filtered_returns_k_rows_with_recall(
    photos: Photos, conn: Any, where: dict[str, Any], label: str, exact_below: str
) -> None:
    """Whatever the strategy, k rows whenever k match, and recall@10 >= 0.95."""
    conn.execute("SELECT set_config('simsearch.exact_below', %s, false)", [exact_below])
    matching = int(photos.matches(where).sum())
    hits = total = 0
    for query in _queries(photos, 8):
        expected = photos.exact(query, 10, where)
        got = _knn(conn, query, 10, where)
        assert len(got) == min(10, matching), label
        assert set(got) <= set(np.array(photos.ids)[photos.matches(where)])
        hits += len(set(got) & set(expected))
        total += len(expected)
        assert _knn(conn, query, 10, where, exact=True) == expected
    assert hits / total >= 0.95, label
    conn.execute("RESET simsearch.exact_below")


def test_filtered_index_path_uses_index(photos: Photos, conn: Any) -> None:
    conn.execute("SET simsearch.exact_below = 1")
    plan = _explain(
        conn,
        "SELECT * FROM simsearch_knn('photos', %s, 10, '{\"bucket\": {\"<\": 100}}')",
        [_queries(photos, 1)[0]],
    )
    assert plan[0].startswith("simsearch: index scan")
    assert any("Index Scan using embeddings_hnsw_" in line for line in plan)
    conn.execute("RESET simsearch.exact_below")
    plan = _explain(
        conn,
        "SELECT * FROM simsearch_knn('photos', %s, 10, '{\"bucket\": {\"<\": 1}}')",
        [_queries(photos, 1)[0]],
    )
    assert plan[0].startswith("simsearch: exact scan")


def test_similar_excludes_itself(photos: Photos, conn: Any) -> None:
    for object_id in photos.ids[:3] + photos.ids[-2:]:
        query = photos.vectors[photos.index[object_id]]
        for exact in (True, False):
            got = [
                r[0]
                for r in conn.execute(
                    "SELECT object_id FROM simsearch_similar('photos', %s, 10, exact => %s)",
                    [object_id, exact],
                ).fetchall()
            ]
            assert object_id not in got and len(got) == 10
            expected = photos.exact(query, 10, exclude=object_id)
            if exact:
                assert got == expected
            else:
                assert len(set(got) & set(expected)) >= 9
        where = {"color": "blue"}
        got = [
            r[0]
            for r in conn.execute(
                "SELECT object_id FROM simsearch_similar('photos', %s, 5, %s, true)",
                [object_id, Jsonb(where)],
            ).fetchall()
        ]
        assert got == photos.exact(query, 5, where, exclude=object_id)


def _readme_sql() -> list[str]:
    text = README.read_text()
    section = text.split("## Use it from SQL", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def test_readme_examples_run_verbatim(photos: Photos, conn: Any) -> None:
    blocks = _readme_sql()
    assert len(blocks) >= 6
    for block in blocks:
        for statement in (s.strip() for s in block.split(";")):
            if not statement or all(line.startswith("--") for line in statement.splitlines()):
                continue
            cursor = conn.execute(statement)
            if statement.upper().startswith("SELECT"):
                assert cursor.fetchall(), statement
    # The headline example equals the exact answer, joined with the titles table.
    rows = conn.execute(blocks[1]).fetchall()
    query = photos.vectors[photos.index[KNOWN_ID]]
    expected = photos.exact(query, 10, exclude=KNOWN_ID)
    assert [r[0] for r in rows] == [f"p/{photos.index[i]}.jpg" for i in expected]
    assert all(r[1].startswith("photo ") for r in rows)


def test_errors_are_one_clear_line(photos: Photos, conn: Any) -> None:
    import psycopg

    cases = [
        ("SELECT * FROM simsearch_knn('nope', '[1,2]', 3)", "no feature set named 'nope'"),
        ("SELECT * FROM simsearch_knn('photos', '[1,2]', 3)", "dimension 2"),
        ("SELECT * FROM simsearch_similar('photos', 'missing.jpg', 3)", "has no object id"),
        ("SELECT * FROM simsearch_similar('photos', %s, 0)", "expected k >= 1"),
        ("SELECT * FROM simsearch_similar('photos', %s, 3, '[1]')", "JSON object"),
        ("SELECT * FROM simsearch_similar('photos', %s, 3, '{\"w\": {\"~\": 1}}')", "operator"),
        (
            "SELECT * FROM simsearch_similar('photos', %s, 3, '{\"width\": \"wide\"}')",
            "whole number",
        ),
    ]
    for statement, message in cases:
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(statement, [KNOWN_ID] if "%s" in statement else None)
        conn.rollback()


def test_hostile_names_keys_and_values(photos: Photos, tmp_path: Path, cli: Any) -> None:
    from simsearch.db import connect

    hostile = "x'); DROP TABLE images; --"
    small = write_shards(tmp_path / "h", photos.ids[:300], photos.vectors[:300], sizes=[300])
    assert cli("ingest", small, "--feature-set", hostile, "--no-index").code == 0
    assert cli("index-build", "--feature-set", hostile).code == 0
    query = photos.vectors[5]
    with connect.connect() as conn:
        for where in (
            {"a'b; DROP TABLE images; --": "x"},
            {"color": "red'; DROP TABLE images; --"},
            {"$1": {"<": "'); DELETE FROM images; --"}},
        ):
            rows = conn.execute(
                "SELECT * FROM simsearch_knn(%s, %s, 5, %s)", [hostile, query, Jsonb(where)]
            ).fetchall()
            assert rows == []
        rows = conn.execute(
            'SELECT object_id FROM simsearch_similar(%s, %s, 3, \'{"color": "red"}\')',
            [hostile, photos.ids[0]],
        ).fetchall()
        assert len(rows) == 3
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == ROWS
        conn.commit()
    result = cli(
        "query",
        "--id",
        photos.ids[0],
        "--feature-set",
        hostile,
        "--where",
        "color=red'; DROP TABLE images; --",
    )
    assert result.code == 0 and result.out == ""
    assert cli("drop", hostile).code == 0


def test_cli_where_and_id(photos: Photos, cli: Any) -> None:
    object_id = photos.ids[7]
    query = photos.vectors[photos.index[object_id]]
    result = cli(
        "query",
        "--id",
        object_id,
        "-n",
        "5",
        "--exact",
        "--feature-set",
        "photos",
        "--where",
        "width>=1024",
        "--where",
        "color=red",
        "--where",
        "added_at<2026-01-20",
    )
    assert result.code == 0, result.err
    where = {"width": {">=": 1024}, "color": "red", "added_at": {"<": "2026-01-20"}}
    assert [line.split()[0] for line in result.lines] == photos.exact(query, 5, where, object_id)
    result = cli("query", "--id", object_id, "-n", "5", "--feature-set", "photos", "--json")
    rows = json.loads(result.out)
    assert [r["object_id"] for r in rows] == photos.exact(query, 5, exclude=object_id)
    result = cli(
        "query",
        "--id",
        photos.ids[1],
        "--id",
        photos.ids[2],
        "--exact",
        "-n",
        "3",
        "--feature-set",
        "photos",
        "--json",
    )
    blocks = [json.loads(line) for line in result.lines]
    assert [b["id"] for b in blocks] == photos.ids[1:3]
    for block in blocks:
        vector = photos.vectors[photos.index[block["id"]]]
        assert [r["object_id"] for r in block["results"]] == photos.exact(
            vector, 3, exclude=block["id"]
        )
    bad = cli("query", "--id", "missing.jpg", "--feature-set", "photos")
    assert bad.code == 1 and "has no object id 'missing.jpg'" in bad.err
    bad = cli("query", "--id", object_id, "--feature-set", "photos", "--where", "width>=wide")
    assert bad.code == 1 and "expected a whole number for width" in bad.err
    bad = cli("query", "--feature-set", "photos")
    assert bad.code == 2 and "expected IMAGE" in bad.err


def test_delete_and_drop_keep_the_ledger(photos: Photos, cli: Any, tmp_path: Path) -> None:
    from simsearch.db import connect

    data = write_shards(tmp_path / "d", photos.ids[:500], photos.vectors[:500], sizes=[200])
    assert cli("ingest", data, "--feature-set", "scratch", "--no-index").code == 0
    assert cli("index-build", "--feature-set", "scratch").code == 0
    gone = photos.ids[10:13]
    result = cli("delete", *gone, "nosuch.jpg", "--feature-set", "scratch")
    assert result.code == 0, result.err
    assert "deleted 3 rows from feature set 'scratch'" in result.out
    assert "nosuch.jpg" in result.err
    with connect.connect() as conn:
        ledger = conn.execute(
            """SELECT sum(s.rows), sum(s.deleted) FROM shards s JOIN feature_sets f
               ON f.id = s.feature_set_id WHERE f.name = 'scratch'"""
        ).fetchone()
        assert tuple(ledger) == (500, 3)
        stored = conn.execute(
            """SELECT count(*) FROM embeddings e JOIN feature_sets f ON f.id = e.feature_set_id
               WHERE f.name = 'scratch'"""
        ).fetchone()[0]
        assert stored == 497
        assert (
            conn.execute(
                "SELECT count(*) FROM images WHERE object_id = ANY(%s)", [gone]
            ).fetchone()[0]
            == 3
        )  # image rows stay
        conn.commit()
    # Re-ingesting the unchanged shards neither resurrects nor duplicates.
    again = cli("ingest", data, "--feature-set", "scratch")
    assert again.code == 0, again.err
    assert "497 rows in all" in again.out
    query = photos.vectors[photos.index[gone[0]]]
    result = cli("query", "--id", photos.ids[0], "-n", "500", "--feature-set", "scratch", "--exact")
    listed = [line.split()[0] for line in result.lines]
    assert len(listed) == 496 and not set(gone) & set(listed)
    assert query.shape == (DIM,)
    result = cli("drop", "scratch")
    assert result.code == 0 and "dropped feature set 'scratch' (497 rows" in result.out
    with connect.connect() as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'embeddings_hnsw_%'"
            ).fetchone()[0]
            == 1
        )  # only photos' index is left
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == ROWS
        conn.commit()
    bad = cli("drop", "scratch")
    assert bad.code == 1 and "no feature set named 'scratch'" in bad.err


def test_delete_everywhere_removes_images(photos: Photos, cli: Any, tmp_path: Path) -> None:
    from simsearch.db import connect

    extra_ids = [f"extra{i}.jpg" for i in range(50)]
    vectors = np.random.default_rng(2).standard_normal((50, DIM)).astype(np.float32)
    data = write_shards(tmp_path / "e", extra_ids, vectors, sizes=[50])
    assert cli("ingest", data, "--feature-set", "extra", "--no-index").code == 0
    result = cli("delete", "extra1.jpg", "extra2.jpg")
    assert result.code == 0 and "deleted 2 rows from every feature set and 2 images" in result.out
    with connect.connect() as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM images WHERE object_id IN ('extra1.jpg', 'extra2.jpg')"
            ).fetchone()[0]
            == 0
        )
        conn.commit()
    assert cli("drop", "extra").code == 0


def test_bench_filters_runs_tiny(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    home = tmp_path / "home"
    env = {**os.environ, "SIMSEARCH_HOME": str(home)}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_filters",
                "--tiny",
                "--out",
                str(out),
                "--home",
                str(home),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "simsearch", "db", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
        )
    text = out.read_text()
    assert "## Other\n\nkept" in text and "## Filtered search" in text
    assert "| 0.1% | 3 | chosen | 3 | 1.000 |" in text
