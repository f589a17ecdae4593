"""The benchmark runs end to end at a tiny size (its timings are never asserted)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def bench_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    from simsearch.db import embedded

    with contextlib.suppress(Exception):
        embedded.stop(home)


def test_tiny_benchmark_runs_and_writes_its_report(tmp_path: Path, bench_home: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(
        "# old\n\n## Embedding throughput\n\nkept by hand\n\n## Targets\n\nold figures\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--tiny",
            "--rows",
            "1200",
            "--shard-rows",
            "300",
            "--queries",
            "8",
            "--data",
            str(tmp_path / "data"),
            "--home",
            str(bench_home),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    for heading in (
        "## Targets",
        "## Ingest",
        "## kNN in SQL",
        "## Incremental ingest",
        "## Cold CLI against the origin's algorithm",
        "## Memory",
    ):
        assert heading in text
    assert "kept by hand" in text and "old figures" not in text  # hand-written section kept
    assert "origin's algorithm (script)" in text and "1,200 x 64" in text
    # Recall is a property of the data, not of the machine: at this size HNSW finds everything.
    assert "| 400 | 100 | 1.0000 |" in text
    # The cold-CLI comparison answered the same photo on the same data the same way.
    assert "Both returned the same 10 of 10 object ids." in text
    # Shards were cached in the origin's format.
    main = tmp_path / "data" / "clustered-1200x64-300-s20260101"
    assert sorted(p.name for p in main.glob("*.npy"))[:2] == [
        "0000.features.npy",
        "0000.object_ids.npy",
    ]
    assert len(list(main.glob("*.features.npy"))) == 4
    # Peak RSS is the child's own, not the benchmark's (which holds every vector).
    assert "Peak RSS" in text


def test_tiny_cluster_benchmark_runs(tmp_path: Path) -> None:
    """bench/bench_cluster.py end to end on tiny data: one server with a standby, and Citus."""
    import json

    from clusters import citus_bindir

    citus_bindir()  # skips (or fails under CI=true) without the Citus source
    out = tmp_path / "cluster.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    tiny = ["--rows", "600", "--dimension", "16", "--shard-rows", "300", "--queries", "5"]
    where = ["--data", str(tmp_path / "data"), "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_cluster", *tiny, "--shards", "2", "--ef", "40", *where],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for topology in ("one server", "citus", "replica"):
        assert figures[topology]["curve"][0]["recall"] > 0.5, topology
    assert set(figures["one server"]["standby_lag"]) == {"after_load_s", "after_build_s"}
    assert "| ef_search 40: recall@10, p50 / p95 ms |" in result.stdout
