"""1,000,000 x 1280: ingest, index build, on-disk sizes, recall and latency.

``python -m bench.bench_million [--rows 1000000] [--data realistic|clustered]``: a single
pass of each step (a build takes tens of minutes on 2 cores), in its own SIMSEARCH_HOME
(bench/data/home-1m); prints the figures for docs/benchmarks.md's "1,000,000 x 1280" section.

``--data clustered`` (the default, as before) is bench/datagen.py's stress set; ``realistic``
is bench/realistic.py's set fitted to real photo embeddings (mostly distinct photos). Then the
peer runs on the same vectors and queries: hnswlib with the same M and ef_construction, and
the NumPy exact scan; each pgvector figure is also printed as a ratio to the peer's
(``--no-peer`` skips it, e.g. without the ``bench`` extra installed).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import datagen, datasets, peer, tiny_model
from .measure import machine
from .run import DATA, Say, exact_top, measure_curve, measure_load, reset, sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_million")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--home", type=Path, default=DATA / "home-1m")
    parser.add_argument("--data", choices=datasets.KINDS, default="clustered")
    parser.add_argument("--no-peer", action="store_true", help="skip hnswlib and the exact scan")
    parser.add_argument("--cache", type=Path, default=DATA, help="where shards are cached")
    parser.add_argument("--model", type=Path, help="a fitted realistic model (bench.realistic)")
    parser.add_argument(
        "--keep-page-cache",
        action="store_true",
        help="cold figures after a server restart only (default: also drop the OS page cache)",
    )
    parser.add_argument(
        "--add",
        type=int,
        default=10_000,
        help="rows added to the indexed set afterwards (realistic data; 0 skips)",
    )
    args = parser.parse_args(argv)
    os.environ["SIMSEARCH_HOME"] = str(args.home.resolve())
    os.environ.pop("SIMSEARCH_DATABASE_URL", None)
    from simsearch import config
    from simsearch.db import connect, feature_sets, hnsw

    say = Say()
    spec = datasets.clustered_spec(args.rows)  # shard layout and dimension, for either set
    say(f"machine: {machine()}")
    name, folder = datasets.shards(args.data, args.rows, args.cache, model=args.model)
    say(f"data: {name}, {spec.rows:,} x {spec.dimension} in {spec.shards} shards ({folder})")
    model = tiny_model.build(args.cache / "tiny-1280.onnx", 1280)
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
        build_s = time.perf_counter() - started
        say(f"index build: {build_s:.1f} s (maintenance_work_mem {memory} MB)")
        fs = feature_sets.feature_set(conn, "bench")
        assert fs is not None
        on_disk = sizes(conn, fs)
        say(f"sizes (bytes): {on_disk}")
        queries, new = datasets.queries(
            args.data, args.rows, args.queries, args.cache, model=args.model
        )
        ids, features = datagen.read_all(folder)
        truth = exact_top(features, queries, 10)
        curve = measure_curve(conn, fs, queries, ids, truth, 1, say)
    measure_restart(args.home, queries, ids, truth, say, drop=not args.keep_page_cache)
    if not args.no_peer:
        # Same vectors, queries and truth; the database is idle by now.
        efs = sorted({point["ef_search"] for point in curve})
        result = peer.hnsw(features, queries, np.array(truth), efs=efs, new=new)
        say("peer: hnswlib (M=16, ef_construction=64, 2 threads) and the NumPy exact scan")
        print(peer.table(result))
        print()
        print(ratios(curve, build_s, result))
    if args.add and args.data == "realistic":
        ids, features = measure_addition(args, ids, features, queries, say)
    del features
    say(
        f"load {load['load_s']:.1f} s ({load['rows_per_s']:,.0f} rows/s), "
        f"RSS {load['rss_mib']:.0f} MiB"
    )
    return 0


def measure_restart(
    home: Path,
    queries: np.ndarray,
    ids: np.ndarray,
    truth: list[list[int]],
    say: Say,
    drop: bool = True,
) -> dict[str, float]:
    """The first pass of queries after the server restarts with the OS page cache dropped
    (when root may drop it): every index and heap page comes from disk."""
    from simsearch import config
    from simsearch.db import connect, embedded, feature_sets, knn

    embedded.stop(home.resolve())
    dropped = drop and _drop_page_cache()
    times: list[float] = []
    hits = 0
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, "bench")
        assert fs is not None
        for q, rows in zip(queries, truth, strict=True):
            started = time.perf_counter()
            found = knn.knn(conn, fs, q, 10)
            times.append((time.perf_counter() - started) * 1000)
            hits += len({str(ids[r]) for r in rows} & {m.object_id for m in found})
    out = {
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "recall": hits / (10 * len(queries)),
    }
    say(
        f"cold (server restarted{', page cache dropped' if dropped else ''}), ef_search "
        f"{config.EF_SEARCH}: recall@10 {out['recall']:.4f}, p50 {out['p50_ms']:.2f} ms, "
        f"p95 {out['p95_ms']:.2f} ms (first pass)"
    )
    return out


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def measure_addition(
    args: argparse.Namespace,
    ids: np.ndarray,
    features: np.ndarray,
    queries: np.ndarray,
    say: Say,
) -> tuple[np.ndarray, np.ndarray]:
    """``args.add`` new rows (the next shards of the same generated collection) loaded into the
    indexed feature set with `simsearch ingest`, timed; then recall at the default setting."""
    import subprocess
    import sys
    import tempfile

    from simsearch import config
    from simsearch.db import connect, feature_sets, knn

    from . import realistic

    fitted, _ = realistic.ensure_model(args.cache, args.model)
    spec = realistic.Spec(args.rows + args.add)
    generator = realistic.Generator(fitted, spec)
    first = args.rows // spec.shard_rows
    stored_shards = -(-args.rows // spec.shard_rows)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        folder = Path(tmp)
        for number, index in enumerate(range(first, spec.shards)):
            # The rows past the stored ones, as shards numbered after the stored shards.
            shard_ids, shard_rows = generator.shard(index)
            keep = slice(max(args.rows - index * spec.shard_rows, 0), None)
            datagen.write_shard(folder, stored_shards + number, shard_ids[keep], shard_rows[keep])
        more_ids, more = datagen.read_all(folder)
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "simsearch", "ingest", str(folder), "--feature-set", "bench"],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"adding rows failed: {run.stderr.strip()}")
    ids = np.concatenate([ids, more_ids])
    features = np.concatenate([features, more])
    truth = exact_top(features, queries, 10)
    hits = 0
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, "bench")
        assert fs is not None and fs.indexed
        for q, rows in zip(queries, truth, strict=True):
            found = knn.knn(conn, fs, q, 10)
            hits += len({str(ids[r]) for r in rows} & {m.object_id for m in found})
    say(
        f"added {len(more_ids):,} rows to the indexed set in {seconds:.1f} s "
        f"({run.stdout.strip()}); recall@10 at ef_search {config.EF_SEARCH} afterwards: "
        f"{hits / (10 * len(queries)):.4f}"
    )
    return ids, features


def ratios(curve: list[dict[str, Any]], build_s: float, result: peer.PeerResult) -> str:
    """pgvector's figures beside the peer's at the same ef_search, and as ratios to them."""
    by_ef = {p.ef: p for p in result.curve}
    lines = [
        f"build: pgvector {build_s:.1f} s, hnswlib {result.build_s:.1f} s, "
        f"ratio {build_s / result.build_s:.2f}",
        "",
        "| ef_search | candidates | recall@10 pgvector / hnswlib (ratio) "
        "| p50 ms pgvector / hnswlib (ratio) | p95 ms pgvector / hnswlib (ratio) "
        "| p50 vs exact NumPy scan |",
        "|---|---|---|---|---|---|",
    ]
    for point in curve:
        h = by_ef[point["ef_search"]]
        recall_ratio = point["recall"] / max(h.recall, 1e-9)
        lines.append(
            f"| {point['ef_search']} | {point['candidates']} "
            f"| {point['recall']:.3f} / {h.recall:.3f} ({recall_ratio:.2f}) "
            f"| {point['p50_ms']:.2f} / {h.p50_ms:.2f} ({point['p50_ms'] / h.p50_ms:.1f}) "
            f"| {point['p95_ms']:.2f} / {h.p95_ms:.2f} ({point['p95_ms'] / h.p95_ms:.1f}) "
            f"| {point['p50_ms'] / result.exact_p50_ms:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
