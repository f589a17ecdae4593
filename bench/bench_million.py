"""1,000,000 x 1280: ingest, index build, on-disk sizes, recall and latency.

``python -m bench.bench_million [--rows 1000000]``: a single pass of each step (a build takes
tens of minutes on 2 cores), in its own SIMSEARCH_HOME (bench/data/home-1m); prints the
figures for docs/benchmarks.md's "1,000,000 x 1280" section.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from . import datagen, tiny_model
from .measure import machine
from .run import DATA, Say, exact_top, measure_curve, measure_load, reset, sizes


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_million")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--home", type=Path, default=DATA / "home-1m")
    args = parser.parse_args()
    os.environ["SIMSEARCH_HOME"] = str(args.home.resolve())
    os.environ.pop("SIMSEARCH_DATABASE_URL", None)
    from simsearch import config
    from simsearch.db import connect, feature_sets, hnsw

    say = Say()
    spec = datagen.Spec(args.rows, 1280, 10_000, clusters=max(args.rows // 100, 10))
    say(f"machine: {machine()}")
    say(f"data: {spec.rows:,} x {spec.dimension} in {spec.shards} shards")
    folder, _ = datagen.ensure(DATA, spec)
    model = tiny_model.build(DATA / "tiny-1280.onnx", 1280)
    with connect.connect() as conn:
        reset(conn)
    load_args = argparse.Namespace(repeat=1, rows=spec.rows, shard_rows=spec.shard_rows)
    load = measure_load(load_args, folder, model, say)
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, "bench")
        assert fs is not None
        memory = hnsw.build_memory_mb(spec.rows, spec.dimension, config.HNSW_M)
        started = time.perf_counter()
        hnsw.build(conn, fs, config.HNSW_M, config.HNSW_EF_CONSTRUCTION)
        say(
            f"index build: {time.perf_counter() - started:.1f} s (maintenance_work_mem {memory} MB)"
        )
        fs = feature_sets.feature_set(conn, "bench")
        assert fs is not None
        on_disk = sizes(conn, fs)
        say(f"sizes (bytes): {on_disk}")
        queries = datagen.Generator(spec).queries(args.queries)
        ids, features = datagen.read_all(folder)
        truth = exact_top(features, queries, 10)
        del features
        measure_curve(conn, fs, queries, ids, truth, 1, say)
    say(
        f"load {load['load_s']:.1f} s ({load['rows_per_s']:,.0f} rows/s), "
        f"RSS {load['rss_mib']:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
