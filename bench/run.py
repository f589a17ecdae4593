"""simsearch's benchmark: ``python -m bench.run`` (add ``--tiny`` for a seconds-long smoke run).

Generates clustered, non-negative feature shards in the origin's format (cached under
bench/data/), then measures, each several times, in a private SIMSEARCH_HOME (bench/data/home):
bulk load, HNSW build, the recall/latency curve of kNN in SQL per (ef_search, candidates),
incremental ingest into an indexed feature set against drop+rebuild, a cold ``simsearch query``
process against the origin's algorithm run as a script on the same data, and peak RSS of ingest
and of a query. Prints a table and writes docs/benchmarks.md (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import datagen, report, tiny_model
from .measure import machine, median, run_child

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
FEATURE_SET = "bench"
# (ef_search, candidates re-ranked exactly): the recall knob's settings, cheapest first.
GRID = [
    (10, 10),
    (20, 20),
    (40, 40),
    (64, 64),
    (100, 40),
    (100, 100),
    (200, 100),
    (200, 200),
    (400, 100),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny size that runs in seconds")
    parser.add_argument("--rows", type=int, help="vectors in all (default 100,000; tiny 3,000)")
    parser.add_argument("--dimension", type=int, help="default 1280 (tiny 64)")
    parser.add_argument("--shard-rows", type=int, help="default 10,000 (tiny 500)")
    parser.add_argument("--queries", type=int, help="held-out query vectors (default 200)")
    parser.add_argument("--repeat", type=int, help="runs of each load and query measurement (3)")
    parser.add_argument("--build-repeat", type=int, help="index builds at the base size (2)")
    parser.add_argument("--cold-runs", type=int, help="cold CLI processes per variant (7)")
    parser.add_argument("--m", type=int, default=None, help="HNSW m (simsearch's default)")
    parser.add_argument("--ef-construction", type=int, default=None, help="(simsearch's default)")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report (default docs/benchmarks.md; tiny: bench/data/benchmarks-tiny.md)",
    )
    parser.add_argument("--home", type=Path, help="SIMSEARCH_HOME (default bench/data/home[-tiny])")
    parser.add_argument("--data", type=Path, default=DATA, help="where shards are cached")
    args = parser.parse_args(argv)
    tiny = args.tiny
    defaults: dict[str, Any] = {
        "rows": 3_000 if tiny else 100_000,
        "dimension": 64 if tiny else 1280,
        "shard_rows": 500 if tiny else 10_000,
        "queries": 20 if tiny else 200,
        "repeat": 2 if tiny else 3,
        "build_repeat": 1 if tiny else 2,
        "cold_runs": 2 if tiny else 7,
        "out": DATA / "benchmarks-tiny.md" if tiny else ROOT / "docs" / "benchmarks.md",
        "home": args.data / ("home-tiny" if tiny else "home"),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    # A private home, set before simsearch reads it: the benchmark never touches users' data.
    os.environ["SIMSEARCH_HOME"] = str(args.home.resolve())
    os.environ.pop("SIMSEARCH_DATABASE_URL", None)
    os.environ.pop("SIMSEARCH_MODEL", None)
    from simsearch import config

    m = args.m or config.HNSW_M
    efc = args.ef_construction or config.HNSW_EF_CONSTRUCTION
    spec = datagen.Spec(
        args.rows, args.dimension, args.shard_rows, clusters=max(args.rows // 100, 10)
    )
    results: dict[str, Any] = {
        "command": command,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "machine": machine(),
        "tiny": args.tiny,
        "spec": spec.__dict__ | {"shards": spec.shards},
        "m": m,
        "ef_construction": efc,
        "defaults": {
            "ef_search": config.EF_SEARCH,
            "candidates": config.CANDIDATES,
        },
    }
    say = Say()

    say(f"data: {spec.rows:,} x {spec.dimension} in {spec.shards} shards (cached in {args.data})")
    main_dir, _ = datagen.ensure(args.data, spec)
    model = tiny_model.build(args.data / f"tiny-{spec.dimension}.onnx", spec.dimension)
    image = tiny_model.query_image(args.data / "query.jpg")
    gen = datagen.Generator(spec)
    queries = gen.queries(args.queries)
    ids, features = datagen.read_all(main_dir)
    truth = exact_top(features, queries, 10)
    results["numpy_exact_ms"] = numpy_exact_ms(features, queries[: min(10, len(queries))])

    from simsearch.db import connect, feature_sets

    with connect.connect() as conn:
        reset(conn)
    results["load"] = measure_load(args, main_dir, model, say)
    with connect.connect() as conn:
        fs = feature_sets.feature_set(conn, FEATURE_SET)
        assert fs is not None
        results["build"] = measure_build(conn, fs, m, efc, args.build_repeat, say)
        fs = feature_sets.feature_set(conn, FEATURE_SET)
        assert fs is not None
        results["sizes"] = sizes(conn, fs)
        results["curve"] = measure_curve(conn, fs, queries, ids, truth, args.repeat, say)
        results["exact_sql_ms"] = exact_sql_ms(conn, fs, queries[: 3 if not args.tiny else 2])

    results["cold"] = measure_cold(args, main_dir, model, image, say)
    results["incremental"] = measure_incremental(args, spec, main_dir, queries, ids, features, say)
    results["rss"] = measure_ingest_rss(args, main_dir, model, say)

    dump = args.out.with_suffix(".json") if args.tiny else DATA / "results.json"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text(json.dumps(results, indent=1))
    text = report.render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(args.out, text)
    print()
    print(report.table(results))
    print(f"\nwrote {args.out}")
    return 0


class Say:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {text}", flush=True)


def simsearch_command() -> list[str]:
    script = Path(sys.executable).parent / "simsearch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "simsearch"]


def reset(conn: Any) -> None:
    """Empty the benchmark's own database (its private SIMSEARCH_HOME)."""
    from simsearch.db import feature_sets

    feature_sets.empty_database(conn)
    conn.execute("CHECKPOINT")  # each load starts from the same WAL state


def exact_top(features: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    """Row indexes of each query's exact top k: a Gram-matrix shortlist of 10 k (float32,
    no copy of the vectors), then the exact distance of each candidate."""
    norms = np.einsum("ij,ij->i", features, features)
    out = []
    width = min(10 * k, len(features) - 1)
    for start in range(0, len(queries), 50):
        block = queries[start : start + 50]
        approx = norms[None, :] - 2.0 * (block @ features.T)
        shortlist = np.argpartition(approx, width, axis=1)[:, : width + 1]
        for q, rows in zip(block, shortlist, strict=False):
            diff = features[rows] - q
            dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            out.append([int(r) for r in rows[np.lexsort((rows, dist))][:k]])
    return out


def numpy_exact_ms(features: np.ndarray, queries: np.ndarray) -> float:
    from simsearch.reference import nearest

    times = []
    for q in queries:
        started = time.perf_counter()
        nearest(features, q, 10)
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def measure_load(args: argparse.Namespace, folder: Path, model: Path, say: Say) -> dict[str, Any]:
    from simsearch.db import connect

    runs = []
    for attempt in range(args.repeat):
        if attempt:
            with connect.connect() as conn:
                reset(conn)
        run = run_child(
            [
                *simsearch_command(),
                "ingest",
                str(folder),
                "--feature-set",
                FEATURE_SET,
                "--model",
                str(model),
                "--no-index",
            ]
        )
        if run.code != 0:
            raise SystemExit(f"ingest failed: {run.err.strip()}")
        seconds = float(re.search(r" in ([\d.]+) s", run.out).group(1))  # type: ignore[union-attr]
        runs.append({"load_s": seconds, "wall_s": run.seconds, "rss_mib": run.max_rss_mib})
        say(
            f"load {attempt + 1}/{args.repeat}: {seconds:.1f} s "
            f"({args.rows / seconds:,.0f} rows/s), process {run.seconds:.1f} s, "
            f"peak RSS {run.max_rss_mib:.0f} MiB"
        )
    load_s = median([r["load_s"] for r in runs])
    return {
        "runs": runs,
        "load_s": load_s,
        "rows_per_s": args.rows / load_s,
        "wall_s": median([r["wall_s"] for r in runs]),
        "rss_mib": max(r["rss_mib"] for r in runs),
        "shards": args.rows // args.shard_rows,
    }


def measure_build(conn: Any, fs: Any, m: int, efc: int, repeat: int, say: Say) -> dict[str, Any]:
    from simsearch.db import hnsw

    times = []
    for attempt in range(repeat):
        started = time.perf_counter()
        hnsw.build(conn, fs, m, efc)
        times.append(time.perf_counter() - started)
        say(f"index build {attempt + 1}/{repeat} (m={m}, ef_construction={efc}): {times[-1]:.1f} s")
    return {"runs": times, "seconds": median(times)}


def sizes(conn: Any, fs: Any) -> dict[str, int]:
    row = conn.execute(
        """SELECT pg_relation_size('embeddings'), pg_total_relation_size('embeddings'),
                  pg_relation_size(to_regclass(%s))""",
        [fs.index_name],
    ).fetchone()
    conn.commit()
    return {"heap": row[0], "table_total": row[1], "index": row[2] or 0}


def measure_curve(
    conn: Any,
    fs: Any,
    queries: np.ndarray,
    ids: np.ndarray,
    truth: list[list[int]],
    repeat: int,
    say: Say,
) -> list[dict[str, Any]]:
    from simsearch.db import knn

    expected = [{str(ids[r]) for r in rows} for rows in truth]
    curve = []
    for ef, candidates in GRID:
        for q in queries:  # warm: the pages this setting visits, and the prepared statements
            knn.knn(conn, fs, q, 10, ef_search=ef, candidates=candidates)
        times: list[float] = []
        recalls: list[float] = []
        for _ in range(repeat):
            for q, want in zip(queries, expected, strict=False):
                started = time.perf_counter()
                found = knn.knn(conn, fs, q, 10, ef_search=ef, candidates=candidates)
                times.append((time.perf_counter() - started) * 1000)
                recalls.append(len(want & {mt.object_id for mt in found}) / 10)
        point = {
            "ef_search": ef,
            "candidates": candidates,
            "recall": float(np.mean(recalls)),
            "worst": float(min(recalls)),
            "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)),
        }
        curve.append(point)
        say(
            f"ef_search {ef:>3} candidates {candidates:>3}: recall@10 {point['recall']:.4f}, "
            f"p50 {point['p50_ms']:.2f} ms, p95 {point['p95_ms']:.2f} ms"
        )
    return curve


def exact_sql_ms(conn: Any, fs: Any, queries: np.ndarray) -> float:
    from simsearch.db import knn

    times = []
    for q in queries:
        started = time.perf_counter()
        knn.knn(conn, fs, q, 10, exact=True)
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def measure_cold(
    args: argparse.Namespace, folder: Path, model: Path, image: Path, say: Say
) -> dict[str, Any]:
    """A new process per query, the embedded server already running, page cache warm."""
    base = [*simsearch_command(), "query", str(image), "--feature-set", FEATURE_SET]
    helptext = run_child([*simsearch_command(), "query", "--help"]).out
    variants: dict[str, list[str]] = {}
    has_daemon = "--no-daemon" in helptext
    variants["simsearch query (in-process)"] = base + (["--no-daemon"] if has_daemon else [])
    if has_daemon:
        variants["simsearch query (thin client, resident server)"] = base
    variants["origin's algorithm (script)"] = [
        sys.executable,
        str(ROOT / "bench" / "origin_search.py"),
        str(folder),
        str(model),
        str(image),
    ]
    out: dict[str, Any] = {"variants": {}}
    answers: dict[str, list[str]] = {}
    for label, command in variants.items():
        warm = run_child(command)  # first run: page cache, server start-up, daemon start-up
        if warm.code != 0:
            out["variants"][label] = {"error": (warm.err.strip().splitlines() or ["?"])[-1]}
            say(f"cold CLI {label}: failed: {out['variants'][label]['error']}")
            continue
        runs = [run_child(command) for _ in range(args.cold_runs)]
        answers[label] = [line.split()[0] for line in runs[-1].out.splitlines() if line.strip()]
        out["variants"][label] = {
            "runs": [r.seconds for r in runs],
            "median_s": median([r.seconds for r in runs]),
            "rss_mib": median([r.max_rss_mib for r in runs]),
        }
        say(
            f"cold CLI {label}: median {out['variants'][label]['median_s']:.3f} s, "
            f"peak RSS {out['variants'][label]['rss_mib']:.0f} MiB"
        )
    if has_daemon:
        run_child([*simsearch_command(), "stop"])
    origin = answers.get("origin's algorithm (script)")
    mine = answers.get("simsearch query (in-process)")
    if origin and mine:
        out["same_top10"] = len(set(origin[:10]) & set(mine[:10]))
    return out


def measure_incremental(
    args: argparse.Namespace,
    spec: datagen.Spec,
    main_dir: Path,
    queries: np.ndarray,
    ids: np.ndarray,
    features: np.ndarray,
    say: Say,
) -> dict[str, Any]:
    """More rows into the indexed feature set: a small load inserts into the HNSW graph, a large
    one (hnsw.REBUILD_FRACTION) drops the index, loads and rebuilds it."""
    from simsearch.db import connect, feature_sets, hnsw

    trickle = datagen.ensure_trickle(args.data, spec)
    _, extra = datagen.ensure(args.data, spec)
    out: dict[str, Any] = {"fraction": hnsw.REBUILD_FRACTION}
    all_ids, all_features = ids, features
    for label, folder in (("insert", trickle), ("rebuild", extra)):
        run = run_child([*simsearch_command(), "ingest", str(folder), "--feature-set", FEATURE_SET])
        if run.code != 0:
            raise SystemExit(f"incremental ingest failed: {run.err.strip()}")
        more_ids, more_features = datagen.read_all(folder)
        all_ids = np.concatenate([all_ids, more_ids])
        all_features = np.concatenate([all_features, more_features])
        truth = exact_top(all_features, queries, 10)
        with connect.connect() as conn:
            fs = feature_sets.feature_set(conn, FEATURE_SET)
            assert fs is not None and fs.indexed
            curve = measure_curve(
                conn,
                fs,
                queries,
                all_ids,
                truth,
                1,
                lambda text, label=label: say(f"after {label}: " + text),
            )
        rebuilt = "rebuilding the HNSW index" in run.err
        out[label] = {
            "rows": len(more_ids),
            "seconds": run.seconds,
            "rss_mib": run.max_rss_mib,
            "rebuilt": rebuilt,
            "total_rows": len(all_ids),
            "curve": curve,
        }
        say(
            f"incremental {label}: {len(more_ids):,} rows in {run.seconds:.1f} s "
            f"({'dropped and rebuilt the index' if rebuilt else 'HNSW inserts'})"
        )
    return out


def measure_ingest_rss(
    args: argparse.Namespace, folder: Path, model: Path, say: Say
) -> dict[str, Any]:
    """Peak RSS of ingest over 1, 2 and all shards: bounded means flat in the shard count."""
    names = sorted(p.name for p in folder.glob("*.npy"))
    out = {}
    for count in sorted({1, 2, len(names) // 4}):
        subset = args.data / f"subset-{folder.name}-{count}"
        subset.mkdir(exist_ok=True)
        for name in names[: 2 * count]:
            link = subset / name
            if not link.exists():
                link.symlink_to(folder.resolve() / name)
        run = run_child(
            [
                *simsearch_command(),
                "ingest",
                str(subset),
                "--feature-set",
                f"rss-{count}",
                "--model",
                str(model),
                "--no-index",
            ]
        )
        if run.code != 0:
            raise SystemExit(f"ingest failed: {run.err.strip()}")
        out[str(count)] = run.max_rss_mib
        say(f"ingest of {count} shard(s): peak RSS {run.max_rss_mib:.0f} MiB")
    return out


if __name__ == "__main__":
    sys.exit(main())
