"""One server, a 2-worker Citus cluster and a read replica, on the same vectors.

``python -m bench.bench_cluster [--rows 100000] [--shards 8]``: starts the topologies with
tests/clusters.py (the wheel's PostgreSQL, Citus built by scripts/citus-build.sh, all on
loopback, the same settings on every node), and for each: ``simsearch ingest`` (binary COPY,
through the coordinator on Citus), the HNSW build (on every shard on Citus), and recall@10 and
latency of the default query at several ef_search, against the exact NumPy answer. The
primary's standby is measured beside it: how long it takes to replay the ingest and the index,
and its search latency. Prints the figures and writes them as JSON.

Every node of every topology runs on this machine's cores: a speed-up from the workers cannot
show here; what does show is what sharding costs or saves per query at equal ef_search.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import datagen, tiny_model
from .measure import machine, run_child
from .run import DATA, Say, exact_top, simsearch_command

ROOT = Path(__file__).resolve().parent.parent
FEATURE_SET = "bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cluster")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=1280)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--shards", type=int, default=8, help="Citus shards per table (8)")
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, default=DATA / "cluster.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))  # the cluster starters the tests use
    import clusters

    say = Say()
    spec = datagen.Spec(
        args.rows, args.dimension, args.shard_rows, clusters=max(args.rows // 100, 10)
    )
    say(f"machine: {machine()}")
    say(f"data: {spec.rows:,} x {spec.dimension} in {spec.shards} shards ({spec.name})")
    folder, _ = datagen.ensure(args.data, spec)
    model = tiny_model.build(args.data / f"tiny-{args.dimension}.onnx", args.dimension)
    queries = datagen.Generator(spec).queries(args.queries)
    ids, features = datagen.read_all(folder)
    truth = [{str(ids[r]) for r in rows} for rows in exact_top(features, queries, 10)]
    del features
    results: dict[str, Any] = {"machine": machine(), "rows": spec.rows, "data": spec.name}
    with clusters.streaming_pair() as pair:

        def replayed() -> float:
            """Seconds until the standby has replayed what the primary wrote so far."""
            started = time.perf_counter()
            pair.wait_replayed(timeout=600)
            return time.perf_counter() - started

        with _pointed_at(pair.primary_url):
            results["one server"] = measure(folder, model, queries, truth, args.ef, say, replayed)
        with _pointed_at(pair.primary_url, replicas=pair.standby_url):
            results["replica"] = {"curve": curve(queries, truth, args.ef, say, "replica")}
    with clusters.citus_cluster(clusters.citus_bindir()) as cluster:
        url = f"{cluster.url}?options=-c%20citus.shard_count%3D{args.shards}"
        with _pointed_at(url):
            results["citus"] = measure(folder, model, queries, truth, args.ef, say)
            results["citus"]["shards"] = args.shards
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, args.ef))
    return 0


@contextmanager
def _pointed_at(url: str, replicas: str | None = None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("SIMSEARCH_DATABASE_URL", "SIMSEARCH_REPLICA_URLS")}
    os.environ["SIMSEARCH_DATABASE_URL"] = url
    os.environ.pop("SIMSEARCH_REPLICA_URLS", None)
    if replicas:
        os.environ["SIMSEARCH_REPLICA_URLS"] = replicas
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure(
    folder: Path,
    model: Path,
    queries: np.ndarray,
    truth: list[set[str]],
    efs: list[int],
    say: Say,
    replayed: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Load with the CLI, build the index, then the recall/latency curve; with ``replayed``,
    how long a standby takes to catch up after the load and after the build."""
    from simsearch import config
    from simsearch.db import connect, feature_sets, hnsw

    where = os.environ["SIMSEARCH_DATABASE_URL"].split("@")[-1]
    ingest = ["ingest", str(folder), "--feature-set", FEATURE_SET, "--model", str(model)]
    run = run_child([*simsearch_command(), *ingest, "--no-index"])
    if run.code != 0:
        raise SystemExit(f"ingest failed: {run.err.strip()}")
    load_s = float(re.search(r" in ([\d.]+) s", run.out).group(1))  # type: ignore[union-attr]
    say(f"{where}: load {load_s:.1f} s")
    lag: dict[str, float] = {}
    if replayed is not None:
        lag["after_load_s"] = replayed()
        say(f"standby: replayed the load {lag['after_load_s']:.2f} s after it finished")
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, FEATURE_SET)
        assert fs is not None
        started = time.perf_counter()
        hnsw.build(conn, fs, config.HNSW_M, config.HNSW_EF_CONSTRUCTION)
        build_s = time.perf_counter() - started
        say(f"{where}: index build {build_s:.1f} s")
        if replayed is not None:
            lag["after_build_s"] = replayed()
            say(f"standby: replayed the build {lag['after_build_s']:.2f} s after it finished")
        status = feature_sets.status(conn)[0]
    return {
        "load_s": load_s,
        "build_s": build_s,
        "index_bytes": status.index_bytes,
        "standby_lag": lag,
        "curve": curve(queries, truth, efs, say, where),
    }


def curve(
    queries: np.ndarray, truth: list[set[str]], efs: list[int], say: Say, where: str
) -> list[dict[str, float]]:
    """recall@10 and latency of the default query path (a search connection: the replica
    when one is configured) for each ef_search."""
    from simsearch.db import connect, feature_sets, knn

    points = []
    with connect.connect(read_only=True) as conn:
        fs = feature_sets.resolve(conn, FEATURE_SET)
        for q in queries[:10]:  # warm the index and the prepared statements
            knn.knn(conn, fs, q, 10)
        for ef in efs:
            times, recalls = [], []
            for q, want in zip(queries, truth, strict=True):
                started = time.perf_counter()
                found = knn.knn(conn, fs, q, 10, ef_search=ef)
                times.append((time.perf_counter() - started) * 1000)
                recalls.append(len(want & {m.object_id for m in found}) / 10)
            point = {
                "ef_search": ef,
                "recall": float(np.mean(recalls)),
                "p50_ms": float(np.percentile(times, 50)),
                "p95_ms": float(np.percentile(times, 95)),
            }
            points.append(point)
            say(
                f"{where}: ef_search {ef}: recall@10 {point['recall']:.3f}, "
                f"p50 {point['p50_ms']:.1f} ms, p95 {point['p95_ms']:.1f} ms"
            )
    return points


def table(r: dict[str, Any], efs: list[int]) -> str:
    """The figures as docs/benchmarks.md shows them."""
    one, citus, replica = r["one server"], r["citus"], r["replica"]
    lag = one["standby_lag"]
    lines = [
        f"| figure | one server | Citus, 2 workers, {citus['shards']} shards | "
        "read replica of the one server |",
        "|---|---|---|---|",
        f"| load (`simsearch ingest`, binary COPY) | {one['load_s']:.1f} s | "
        f"{citus['load_s']:.1f} s | replayed {lag['after_load_s']:.2f} s after the load |",
        f"| HNSW build (m 16, ef_construction 64) | {one['build_s']:.1f} s | "
        f"{citus['build_s']:.1f} s | replayed {lag['after_build_s']:.2f} s after the build |",
        f"| HNSW index size | {_mib(one['index_bytes'])} | {_mib(citus['index_bytes'])} "
        "(all shards) | same as the primary |",
    ]
    for i, ef in enumerate(efs):
        a, b, c = one["curve"][i], citus["curve"][i], replica["curve"][i]
        lines.append(
            f"| ef_search {ef}: recall@10, p50 / p95 ms | {a['recall']:.3f}, "
            f"{a['p50_ms']:.1f} / {a['p95_ms']:.1f} | {b['recall']:.3f}, {b['p50_ms']:.1f} / "
            f"{b['p95_ms']:.1f} | {c['recall']:.3f}, {c['p50_ms']:.1f} / {c['p95_ms']:.1f} |"
        )
    return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.0f} MiB"


if __name__ == "__main__":
    raise SystemExit(main())
