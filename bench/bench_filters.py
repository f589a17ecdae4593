"""Filtered search: rows returned, recall@10 and latency for filters keeping 50% to 0.1%.

``python -m bench.bench_filters`` (``--tiny`` for a seconds-long run). Loads clustered vectors
(bench.datagen) into a private SIMSEARCH_HOME, builds the HNSW index with ``simsearch
index-build``, gives every image a metadata number ``bucket`` (0..999, a random permutation, so
``bucket < 500`` keeps exactly 50%) and then, per filter, runs the same queries through
``simsearch_knn`` three ways: the default (the function chooses), always the index
(``simsearch.exact_below = 0``) and always the exact scan of the matching rows. Recall is
against the exact filtered answer (``exact => true``). Writes the "## Filtered search" section
of docs/benchmarks.md and leaves the rest of that file alone.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import datagen

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
HEADING = "## Filtered search"
FILTERS = [("50%", 500), ("10%", 100), ("1%", 10), ("0.1%", 1)]
STRATEGIES = [("chosen", None), ("index", "0"), ("exact scan", "1000000000")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_filters", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tiny", action="store_true", help="3,000 rows, 32-d, 5 queries")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=256)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--home", type=Path, default=None, help="SIMSEARCH_HOME (default: bench/data/home-filters)"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.rows, args.dimension, args.queries = 3000, 32, 5
    home = args.home or DATA / ("home-filters-tiny" if args.tiny else "home-filters")
    os.environ["SIMSEARCH_HOME"] = str(home)
    os.environ.pop("SIMSEARCH_DATABASE_URL", None)
    spec = datagen.Spec(
        rows=args.rows,
        dimension=args.dimension,
        shard_rows=min(10_000, args.rows),
        clusters=max(10, args.rows // 1000),
    )
    folder, _ = datagen.ensure(DATA, spec, extra=1)
    load(folder, args.rows)
    results = measure(datagen.Generator(spec).queries(args.queries), args.k)
    text = render(results, args)
    print(text)
    write_section(args.out, text)
    return 0


def _cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "simsearch", *argv], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"simsearch {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def load(folder: Path, rows: int) -> None:
    from simsearch.db import connect

    with connect.connect() as conn:
        found = conn.execute(
            """SELECT count(*) FROM embeddings e JOIN feature_sets f ON f.id = e.feature_set_id
               WHERE f.name = 'filters'"""
        ).fetchone()
        conn.commit()
    if found and found[0] == rows:
        return
    _cli("ingest", str(folder), "--feature-set", "filters", "--no-index", "--replace")
    _cli("index-build", "--feature-set", "filters")
    with connect.connect() as conn:
        # bucket: a random permutation of the rows, modulo 1000: exact 50/10/1/0.1% slices.
        conn.execute(
            """UPDATE images i SET meta = i.meta || jsonb_build_object('bucket', p.r % 1000)
               FROM (SELECT object_id, row_number() OVER (ORDER BY md5(object_id)) - 1 AS r
                     FROM images) p WHERE p.object_id = i.object_id"""
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE images")


def measure(queries: np.ndarray, k: int) -> list[dict[str, Any]]:
    from psycopg.types.json import Jsonb

    from simsearch.db import connect

    results = []
    with connect.connect() as conn:
        conn.autocommit = True
        total = conn.execute("SELECT count(*) FROM images").fetchone()[0]  # type: ignore[index]
        for label, bound in [("none", None), *FILTERS]:
            where = Jsonb({"bucket": {"<": bound}} if bound is not None else {})
            matching = (
                total
                if bound is None
                else conn.execute(
                    "SELECT count(*) FROM images WHERE (meta->>'bucket')::int < %s", [bound]
                ).fetchone()[0]
            )  # type: ignore[index]
            truth = [
                [
                    r[0]
                    for r in conn.execute(
                        "SELECT object_id FROM simsearch_knn('filters', %s, %s, %s, true)",
                        [q, k, where],
                    ).fetchall()
                ]
                for q in queries
            ]
            for strategy, setting in STRATEGIES:
                conn.execute(
                    "RESET simsearch.exact_below"
                    if setting is None
                    else f"SET simsearch.exact_below = {int(setting)}"
                )
                times, recalls, counts = [], [], []
                for repeat in range(2):  # the first pass warms the cache
                    for q, expected in zip(queries, truth, strict=True):
                        start = time.perf_counter()
                        got = [
                            r[0]
                            for r in conn.execute(
                                "SELECT object_id FROM simsearch_knn('filters', %s, %s, %s)",
                                [q, k, where],
                            ).fetchall()
                        ]
                        elapsed = time.perf_counter() - start
                        if repeat:
                            times.append(elapsed)
                            counts.append(len(got))
                            recalls.append(len(set(got) & set(expected)) / max(1, len(expected)))
                results.append(
                    {
                        "filter": label,
                        "matching": matching,
                        "strategy": strategy,
                        "min_rows": min(counts),
                        "recall": statistics.mean(recalls),
                        "p50_ms": 1000 * statistics.median(times),
                        "p95_ms": 1000 * float(np.percentile(times, 95)),
                    }
                )
                print(results[-1], file=sys.stderr)
        conn.execute("RESET simsearch.exact_below")
    return results


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        HEADING,
        "",
        f"`python -m bench.bench_filters` — {args.rows:,} clustered {args.dimension}-d vectors "
        f"(bench.datagen), HNSW m=16 ef_construction=64 on halfvec, k={args.k}, {args.queries} "
        'new query vectors, each filter `{"bucket": {"<": N}}` on a metadata number through '
        "`simsearch_knn`. *chosen* is the default; *index* forces the iterative index scan "
        "(`simsearch.exact_below = 0`), *exact scan* forces the scan of the matching rows. "
        "Recall@10 is against the exact filtered answer; latencies are medians of a warm second "
        f"pass on a shared 2-core machine ({time.strftime('%Y-%m-%d')}).",
        "",
        "| filter keeps | matching rows | strategy | fewest rows returned | recall@10 "
        "| p50 ms | p95 ms |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['filter']} | {r['matching']:,} | {r['strategy']} | {r['min_rows']} | "
            f"{r['recall']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace the "## Filtered search" section (up to the next "## "), or append it."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    analysis = ""
    found = pattern.search(old)
    if found:
        # Keep the hand-written analysis after the table (everything from "### " on).
        tail = found.group(0).split("\n### ", 1)
        analysis = "\n### " + tail[1] if len(tail) == 2 else ""
        rest = old[found.end() :]
        body = (text + analysis).rstrip("\n") + "\n"
        new = old[: found.start()] + body + ("\n" + rest if rest else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new if new.endswith("\n") else new + "\n")


if __name__ == "__main__":
    sys.exit(main())
